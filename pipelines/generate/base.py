"""The `Generator` interface: prompt -> JSON answer, validated, retried, cached and counted."""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from pipelines.generate.cache import PromptCache
from pipelines.generate.jsonschema import schema_errors

log = logging.getLogger(__name__)
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    backend: str = "template"  # template | openai | vllm | transformers
    model: str = ""  # served model name (openai), model path (vllm, transformers)
    base_url: str = "http://127.0.0.1:8000/v1"  # openai: the server's /v1 root
    api_key_env: str = "OPENAI_API_KEY"  # openai: the environment variable holding the key
    temperature: float = 0.7
    max_tokens: int = 512
    max_retries: int = 2  # further attempts after the first, for answers that fail the schema
    concurrency: int = 8  # openai: requests in flight
    timeout_s: float = 120.0  # openai: one HTTP call; a stalled server counts as a failed try
    retry_backoff_s: float = 1.0  # openai: base delay between HTTP retries (doubles each time)
    max_backoff_s: float = 60.0  # openai: longest delay between retries (and Retry-After)
    http_retries: int = 4  # openai: retries of one HTTP call on 429/5xx/connection errors


@dataclasses.dataclass(frozen=True)
class Request:
    messages: tuple[dict, ...]  # chat messages; LLM backends see only these
    schema: dict  # the answer's JSON schema
    context: dict  # structured context; the template backend answers from it
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class Result:
    value: Any | None  # the validated answer, or None when every attempt failed
    error: str | None = None
    attempts: int = 0
    cached: bool = False


def parse_answer(text: str, schema: dict) -> tuple[Any | None, str | None]:
    """(value, None) for a schema-valid JSON answer, else (None, why)."""
    if text is None:
        return None, "no answer"
    body = _FENCE.sub("", text.strip())
    if not body.startswith(("{", "[")):  # models sometimes talk before the JSON
        start = min((i for i in (body.find("{"), body.find("[")) if i >= 0), default=-1)
        body = body[start:] if start >= 0 else body
    try:
        value = json.loads(body)
    except json.JSONDecodeError as e:
        return None, f"not JSON ({e.msg} at {e.pos})"
    errors = schema_errors(value, schema)
    return (None, "; ".join(errors[:3])) if errors else (value, None)


class Generator(abc.ABC):
    name = "base"

    def __init__(self, cfg: GeneratorConfig, cache_dir=None):
        self.cfg = cfg
        self.cache = PromptCache(cache_dir)
        # requests, cache_hits, calls (requests sent to the backend, schema retries included),
        # schema_retries, failures (no valid answer after every attempt); backends add their own.
        self.stats: Counter = Counter()

    @abc.abstractmethod
    def complete(self, requests: Sequence[Request], attempt: int) -> list[str | None]:
        """Raw answer text per request (None where the backend gave none)."""

    def cache_key(self, request: Request) -> str:
        blob = json.dumps(
            {
                "backend": self.name,
                "model": self.cfg.model,
                "messages": request.messages,
                "schema": request.schema,
                "temperature": self.cfg.temperature,
                "seed": request.seed,
                "context": request.context if self.name == "template" else None,
            },
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def generate(self, requests: Sequence[Request]) -> list[Result]:
        keys = [self.cache_key(r) for r in requests]
        results: list[Result | None] = [None] * len(requests)
        pending = []
        for i, key in enumerate(keys):
            value = self.cache.get(key)
            if value is None:
                pending.append(i)
            else:
                results[i] = Result(value, attempts=0, cached=True)
        self.stats["requests"] += len(requests)
        self.stats["cache_hits"] += len(requests) - len(pending)
        errors: dict[int, str] = {}
        for attempt in range(self.cfg.max_retries + 1):
            if not pending:
                break
            self.stats["calls"] += len(pending)
            self.stats["schema_retries"] += len(pending) if attempt else 0
            texts = self.complete([requests[i] for i in pending], attempt)
            failed, answered = [], []
            for i, text in zip(pending, texts, strict=True):
                value, error = parse_answer(text, requests[i].schema)
                if error is None:
                    answered.append((keys[i], value))
                    results[i] = Result(value, attempts=attempt + 1)
                else:
                    errors[i] = error
                    failed.append(i)
            self.cache.put_many(answered)
            pending = failed
        for i in pending:
            results[i] = Result(None, errors[i], attempts=self.cfg.max_retries + 1)
        self.stats["failures"] += len(pending)
        return results  # type: ignore[return-value]

    def close(self) -> None:
        self.cache.close()

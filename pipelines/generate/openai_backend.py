"""The `openai` backend: any OpenAI-compatible chat-completions server (a vLLM server, TGI,
llama.cpp, hosted APIs), over the standard library's `urllib`.

Requests go out `concurrency` at a time (the server batches them: vLLM's continuous batching
wants many in flight, a shared server wants a bound). HTTP 429 / 5xx, connection errors and
stalls (no answer within `timeout_s`) are retried with exponential backoff, honouring a
`Retry-After` header; a 4xx other than 429 is not. The API key is read from the environment
variable named in the config and only ever placed in the Authorization header: it is never
logged, cached or written into errors.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from pipelines.generate.base import Generator, Request

log = logging.getLogger(__name__)
RETRY_STATUS = (429, 500, 502, 503, 504)


class OpenAIGenerator(Generator):
    name = "openai"

    def __init__(self, cfg, cache_dir=None):
        super().__init__(cfg, cache_dir)
        if not cfg.model:
            raise ValueError("generator.model: the openai backend needs the served model's name")
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        self._key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
        self._lock = threading.Lock()  # stats are counted from the request threads

    def _count(self, name: str) -> None:
        with self._lock:
            self.stats[name] += 1

    def _body(self, request: Request, attempt: int) -> bytes:
        body = {
            "model": self.cfg.model,
            "messages": list(request.messages),
            "temperature": self.cfg.temperature,
            "max_tokens": self.cfg.max_tokens,
            # A retry after a schema failure must not get the same sample again.
            "seed": request.seed + 7919 * attempt,
            "response_format": {"type": "json_object"},
        }
        return json.dumps(body, ensure_ascii=False).encode("utf-8")

    def _post(self, request: Request, attempt: int) -> str | None:
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        data = self._body(request, attempt)
        delay = self.cfg.retry_backoff_s
        for http_try in range(self.cfg.http_retries + 1):
            self._count("http_requests")
            wait = delay
            try:
                req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.cfg.timeout_s) as response:
                    payload = json.loads(response.read().decode("utf-8"))
                return payload["choices"][0]["message"]["content"]
            except urllib.error.HTTPError as e:
                if e.code not in RETRY_STATUS:
                    log.warning("%s: HTTP %d, not retried", self.url, e.code)
                    self._count("http_errors")
                    return None
                reason = f"HTTP {e.code}"
                wait = max(delay, _retry_after(e.headers.get("Retry-After")))
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                reason = type(getattr(e, "reason", e)).__name__  # a stall: TimeoutError
            except (KeyError, IndexError, ValueError):
                log.warning("%s: answer without choices[0].message.content", self.url)
                self._count("http_errors")
                return None
            self._count("http_errors")
            if http_try < self.cfg.http_retries:
                self._count("http_retries")
                wait = min(wait, self.cfg.max_backoff_s)
                log.info("%s: %s, retry %d in %.2fs", self.url, reason, http_try + 1, wait)
                time.sleep(wait)
                delay *= 2
        log.warning("%s: giving up after %d tries", self.url, self.cfg.http_retries + 1)
        return None

    def complete(self, requests: Sequence[Request], attempt: int) -> list[str | None]:
        with ThreadPoolExecutor(max_workers=max(1, self.cfg.concurrency)) as pool:
            return list(pool.map(lambda r: self._post(r, attempt), requests))


def _retry_after(value: str | None) -> float:
    try:
        return max(float(value), 0.0) if value else 0.0
    except ValueError:  # an HTTP date: not worth parsing, the backoff applies
        return 0.0

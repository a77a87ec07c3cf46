"""The `openai` backend: any OpenAI-compatible chat-completions server (vLLM, TGI, llama.cpp,
hosted APIs), over the standard library's `urllib`.

The API key is read from the environment variable named in the config and only ever placed in
the Authorization header: it is never logged, cached or written into errors. HTTP 429 / 5xx
and connection errors are retried with exponential backoff; a 4xx other than 429 is not.
"""

from __future__ import annotations

import json
import logging
import os
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

    def __init__(self, cfg, cache_path=None):
        super().__init__(cfg, cache_path)
        if not cfg.model:
            raise ValueError("generator.model: the openai backend needs the served model's name")
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        self._key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
        self.http_calls = 0

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
            self.http_calls += 1
            try:
                req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.cfg.timeout_s) as response:
                    payload = json.loads(response.read().decode("utf-8"))
                return payload["choices"][0]["message"]["content"]
            except urllib.error.HTTPError as e:
                if e.code not in RETRY_STATUS:
                    log.warning("%s: HTTP %d, not retried", self.url, e.code)
                    return None
                reason = f"HTTP {e.code}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                reason = type(e).__name__
            except (KeyError, IndexError, ValueError):
                log.warning("%s: answer without choices[0].message.content", self.url)
                return None
            if http_try < self.cfg.http_retries:
                log.info("%s: %s, retry %d in %.2fs", self.url, reason, http_try + 1, delay)
                time.sleep(delay)
                delay *= 2
        log.warning("%s: giving up after %d tries", self.url, self.cfg.http_retries + 1)
        return None

    def complete(self, requests: Sequence[Request], attempt: int) -> list[str | None]:
        with ThreadPoolExecutor(max_workers=max(1, self.cfg.concurrency)) as pool:
            return list(pool.map(lambda r: self._post(r, attempt), requests))

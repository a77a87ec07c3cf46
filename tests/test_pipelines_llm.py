"""LLM calls at scale against a local OpenAI-compatible server that fails and stalls on purpose
(127.0.0.1 only): bounded concurrency, retries with backoff, the prompt cache (a rerun pays for
nothing), and per-stage counts in the build report, through the Beam pipeline."""

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipelines import build
from pipelines.config import load_config
from pipelines.generate import GeneratorConfig, Request, make_generator
from pipelines.generate.prompts import queries_schema


class Flaky(BaseHTTPRequestHandler):
    """Answers chat completions; every 5th request is a 503, every 7th stalls past the client's
    timeout (and never answers), every 11th is a 429 with Retry-After. Counts requests and the
    peak number answered at once."""

    lock = threading.Lock()
    posts = 0
    in_flight = peak = 0

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with Flaky.lock:
            Flaky.posts += 1
            n = Flaky.posts
        if n % 7 == 3:
            time.sleep(0.8)  # the client gave up at 0.3 s: a stall, then a retry
            return
        with Flaky.lock:  # requests a live client waits for
            Flaky.in_flight += 1
            Flaky.peak = max(Flaky.peak, Flaky.in_flight)
        try:
            if n % 5 == 1:
                return self._send(503, {})
            if n % 11 == 5:
                return self._send(429, {}, {"Retry-After": "0.05"})
            content = json.dumps(answer(body["messages"][-1]["content"]), ensure_ascii=False)
            self._send(200, {"choices": [{"message": {"role": "assistant", "content": content}}]})
        except (BrokenPipeError, ConnectionResetError):
            pass  # the stalled client hung up
        finally:
            with Flaky.lock:
                Flaky.in_flight -= 1

    def _send(self, status, payload, headers=None):
        self.send_response(status)
        for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(json.dumps(payload).encode())

    def log_message(self, *args):
        pass


def answer(prompt: str) -> dict:
    """What a model would say to our prompts, from the listing inside them."""
    if prompt.startswith("Translate this") and "product title" in prompt:
        return {"title": re.search(r"Title: (.*)", prompt).group(1)}
    listing, _ = json.JSONDecoder().raw_decode(prompt, prompt.index("{"))
    if prompt.startswith("Translate this"):
        return {"title": listing["title"] + " (tr)", "description": listing["description"]}
    title = listing["title"]
    return {"queries": [title.lower()[:60], " ".join(title.split()[:2]).lower()]}


@pytest.fixture
def server():
    Flaky.posts = Flaky.in_flight = Flaky.peak = 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def flaky_config(url: str, **kw) -> GeneratorConfig:
    return GeneratorConfig(
        backend="openai", model="m", base_url=url, api_key_env="", timeout_s=0.3,
        retry_backoff_s=0.01, http_retries=6, concurrency=4, **kw,
    )  # fmt: skip


def test_retries_stalls_and_failures_then_the_cache_pays_nothing_twice(server, tmp_path):
    requests = [
        Request(
            ({"role": "user", "content": f'Product listing:\n{{"title": "Kaos {i}"}}'},),
            queries_schema(2),
            {},
            seed=i,
        )
        for i in range(40)
    ]
    gen = make_generator(flaky_config(server), tmp_path / "cache")
    results = gen.generate(requests)
    assert all(r.value is not None and not r.cached for r in results)
    assert results[3].value == {"queries": ["kaos 3", "kaos 3"]}
    s = gen.stats
    assert s["requests"] == 40 and s["calls"] == 40 and s["failures"] == 0
    assert s["http_requests"] == Flaky.posts == 40 + s["http_retries"]
    stalls = sum(1 for n in range(1, Flaky.posts + 1) if n % 7 == 3)
    assert s["http_errors"] == s["http_retries"] >= stalls > 0
    assert Flaky.peak <= 4  # bounded concurrency
    again = make_generator(flaky_config(server), tmp_path / "cache")
    posts = Flaky.posts
    assert [r.value for r in again.generate(requests)] == [r.value for r in results]
    assert Flaky.posts == posts and again.stats["cache_hits"] == 40 and again.stats["calls"] == 0


def test_beam_build_against_the_flaky_server_counts_calls_and_reruns_for_free(server, tmp_path):
    overrides = [
        "catalog.generate_size=60",
        "catalog.generate_files=2",
        "partitions=2",
        "synthesis.fraction=0.5",
        "translation.fraction=0.5",
        "translation.filter=none",
        "mining.teacher=hashing",
        "generator.backend=openai",
        "generator.model=m",
        f"generator.base_url={server}",
        "generator.api_key_env=",
        "generator.timeout_s=0.3",
        "generator.retry_backoff_s=0.01",
        "generator.http_retries=6",
    ]
    cfg = load_config(None, overrides)
    out = tmp_path / "out"
    build.run(cfg, str(out), runner="beam")
    report = json.loads((out / "report.json").read_text())
    for stage in ("synthesize", "translate"):
        g = report[stage]["generator"]
        assert g["requests"] == g["calls"] > 10 and g["failures"] == 0 and g["cache_hits"] == 0
        assert g["http_requests"] == g["requests"] + g["http_retries"] and g["http_retries"] > 0
    assert report["synthesize"]["records"] > 20
    posts = Flaky.posts
    card = (out / "card.json").read_bytes()
    build.run(cfg, str(out), runner="beam")  # a rerun: every answer from the cache
    assert Flaky.posts == posts and (out / "card.json").read_bytes() == card
    report = json.loads((out / "report.json").read_text())
    g = report["synthesize"]["generator"]
    assert g["cache_hits"] == g["requests"] > 10 and g.get("calls", 0) == 0

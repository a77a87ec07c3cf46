"""The Generator interface: schema validation, retries, prompt-hash cache; the template
backend end to end; the openai backend's protocol against a local HTTP server; vllm with a
stand-in module (its real use needs a GPU host)."""

import json
import logging
import sys
import threading
import types
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pytest

from pipelines.catalog.generate import generate_catalog
from pipelines.catalog.schema import validate_record
from pipelines.catalog.vocab import load_vocabulary
from pipelines.generate import GeneratorConfig, Request, make_generator
from pipelines.generate.base import Generator, parse_answer
from pipelines.generate.jsonschema import schema_errors
from pipelines.generate.prompts import queries_schema
from pipelines.tasks.construct import Context, TasksConfig
from pipelines.tasks.labels import LabelMap
from pipelines.tasks.synthetic import SynthesisConfig, synthesize
from pipelines.tasks.translated import TranslationConfig, char_fscore, translate

SCHEMA = queries_schema(2)


def request(seed=0, text="kaos hitam"):
    return Request(
        ({"role": "user", "content": f"queries for {text}"},),
        SCHEMA,
        {"kind": "test", "text": text},
        seed=seed,
    )


def test_schema_errors_and_answer_parsing():
    assert schema_errors({"queries": ["a b", "c d"]}, SCHEMA) == []
    assert "missing property 'queries'" in schema_errors({}, SCHEMA)[0]
    assert "3 items, more than 2" in schema_errors({"queries": ["ab", "cd", "ef"]}, SCHEMA)[0]
    assert "expected string" in schema_errors({"queries": [3]}, SCHEMA)[0]
    assert parse_answer('```json\n{"queries": ["ab"]}\n```', SCHEMA) == ({"queries": ["ab"]}, None)
    assert parse_answer('Sure! {"queries": ["ab"]}', SCHEMA)[0] == {"queries": ["ab"]}
    assert parse_answer("no json here", SCHEMA)[1].startswith("not JSON")


class Scripted(Generator):
    """Answers from a script per attempt; counts calls."""

    name = "scripted"

    def __init__(self, answers, cache_path=None, retries=2):
        super().__init__(GeneratorConfig(backend="scripted", max_retries=retries), cache_path)
        self.answers, self.calls = answers, []

    def complete(self, requests, attempt):
        self.calls.append((len(requests), attempt))
        return [self.answers[attempt] for _ in requests]


def test_retry_until_valid_then_cached(tmp_path):
    gen = Scripted(["not json", '{"queries": []}', '{"queries": ["ok go"]}'], tmp_path / "c.db")
    [r] = gen.generate([request()])
    assert r.value == {"queries": ["ok go"]} and r.attempts == 3 and not r.cached
    gen.close()
    again = Scripted(["never used"] * 3, tmp_path / "c.db")  # a re-run reads the cache
    [r2] = again.generate([request()])
    assert r2.cached and r2.value == {"queries": ["ok go"]} and again.calls == []
    [r3] = again.generate([request(seed=1)])  # another prompt (seed) is not a cache hit
    assert not r3.cached and r3.value is None and "not JSON" in r3.error


def test_failure_after_all_retries_reports_the_last_error():
    gen = Scripted(['{"queries": [1]}'] * 3, retries=2)
    [r] = gen.generate([request()])
    assert r.value is None and r.attempts == 3 and "expected string" in r.error
    assert gen.calls == [(1, 0), (1, 1), (1, 2)]


@pytest.fixture(scope="module")
def products():
    return [validate_record(r, "gen") for r in generate_catalog(60, seed=5)]


@pytest.fixture(scope="module")
def ctx(products):
    labels = LabelMap.from_paths(p.category_keys for p in products)
    return Context(TasksConfig(), load_vocabulary(), labels, 1, {"train": 1.0})


def test_template_backend_synthesis_end_to_end(tmp_path, products, ctx):
    gen = make_generator(GeneratorConfig(backend="template"), tmp_path / "t.db")
    records, rejects = synthesize(products, gen, SynthesisConfig(fraction=0.5), ctx)
    assert rejects == [] and len(records) > 20
    by_id = {p.id: p for p in products}
    for r in records:
        p = by_id[r["doc_id"]]
        assert r["task"] == "synthetic_query" and r["positive"] == p.title
        assert r["lang"] == p.lang and r["source"] == "synthetic:template"
        assert r["query"] and r["query"] != p.title
        assert r["positive_label"] == ctx.labels.label(p.category_keys) >= 0
    # Deterministic: the same seed gives the same queries (and the cache serves them).
    again, _ = synthesize(products, gen, SynthesisConfig(fraction=0.5), ctx)
    assert again == records and gen.stats["cache_hits"] >= len({r["doc_id"] for r in records})


def test_template_translation_is_filtered_by_back_translation(tmp_path, products, ctx):
    gen = make_generator(GeneratorConfig(backend="template"), tmp_path / "t.db")
    cfg = TranslationConfig(fraction=0.6, filter="back_translation", min_agreement=0.5)
    records, rejects = translate(products, gen, cfg, ctx)
    pairs = [r for r in records if r["task"] == "cross_lingual"]
    assert pairs and all(r["source"] == "translation:template" for r in pairs)
    for r in pairs:  # the group had no listing in the target language
        src, tgt = r["lang"].split(">")
        group_langs = {p.lang for p in products if p.group_id == r["group_id"]}
        assert src in group_langs and tgt not in group_langs
    thai = [r for r in pairs if r["lang"].endswith(">th")]
    assert thai and all(any("\u0e00" <= c <= "\u0e7f" for c in r["positive"]) for r in thai)
    strict = TranslationConfig(fraction=0.6, filter="back_translation", min_agreement=0.99)
    _, rejected = translate(products, gen, strict, ctx)
    assert len(rejected) > len(rejects) and "agreement" in rejected[-1]["reason"]


def test_char_fscore():
    assert char_fscore("kaos hitam", "kaos hitam") == 1.0
    assert char_fscore("kaos hitam", "xyz") == 0.0
    assert 0.3 < char_fscore("Kaos Polos Hitam", "kaos polos putih") < 0.9


class FakeOpenAI(BaseHTTPRequestHandler):
    """A chat-completions server that fails first, as real ones do under load."""

    script: ClassVar[list] = []
    seen: ClassVar[list] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOpenAI.seen.append(
            {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
        )
        status, content = FakeOpenAI.script.pop(0)
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]})
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = HTTPServer(("127.0.0.1", 0), FakeOpenAI)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def test_openai_backend_protocol_retries_and_key_handling(server, monkeypatch, caplog):
    secret = "sk-test-do-not-log-0123456789"
    monkeypatch.setenv("MY_LLM_KEY", secret)
    FakeOpenAI.seen.clear()
    FakeOpenAI.script[:] = [
        (503, ""),  # HTTP retry
        (429, ""),  # HTTP retry
        (200, "I think the queries are: kaos"),  # not JSON: a schema retry, new seed
        (200, '{"queries": ["kaos hitam murah", "kaos polos"]}'),
    ]
    cfg = GeneratorConfig(
        backend="openai",
        model="qwen-test",
        base_url=server,
        api_key_env="MY_LLM_KEY",
        retry_backoff_s=0.01,
        concurrency=1,
    )
    gen = make_generator(cfg)
    with caplog.at_level(logging.DEBUG):
        [r] = gen.generate([request(seed=11)])
    assert r.value == {"queries": ["kaos hitam murah", "kaos polos"]} and r.attempts == 2
    assert gen.stats["http_requests"] == 4 and len(FakeOpenAI.seen) == 4
    assert gen.stats["http_retries"] == 2 and gen.stats["schema_retries"] == 1
    first, last = FakeOpenAI.seen[0], FakeOpenAI.seen[-1]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == f"Bearer {secret}"
    assert first["body"]["model"] == "qwen-test"
    assert first["body"]["messages"] == [{"role": "user", "content": "queries for kaos hitam"}]
    assert first["body"]["response_format"] == {"type": "json_object"}
    assert first["body"]["seed"] == 11 and last["body"]["seed"] != 11  # a retry resamples
    assert secret not in caplog.text and "503" in caplog.text
    # A cached answer costs no HTTP call.
    [again] = gen.generate([request(seed=11)])
    assert again.cached and len(FakeOpenAI.seen) == 4


def test_openai_backend_gives_up_on_client_errors(server):
    FakeOpenAI.seen.clear()
    FakeOpenAI.script[:] = [(400, "")] * 3
    cfg = GeneratorConfig(
        backend="openai",
        model="m",
        base_url=server,
        api_key_env="",
        max_retries=2,
        retry_backoff_s=0.01,
    )
    [r] = make_generator(cfg).generate([request()])
    assert r.value is None and r.error == "no answer"
    assert len(FakeOpenAI.seen) == 3 and FakeOpenAI.seen[0]["auth"] is None  # no key: no header


def test_vllm_backend_batches_with_structured_outputs(monkeypatch):
    calls = {}

    class LLM:
        def __init__(self, model, seed):
            calls["model"] = model

        def chat(self, messages, params, use_tqdm):
            calls["n"], calls["params"] = len(messages), params
            out = types.SimpleNamespace(text='{"queries": ["ao thun den"]}')
            return [types.SimpleNamespace(outputs=[out]) for _ in messages]

    sampling = types.ModuleType("vllm.sampling_params")
    sampling.StructuredOutputsParams = lambda json: ("structured", json)
    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = LLM, lambda **kw: kw
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sampling)
    gen = make_generator(GeneratorConfig(backend="vllm", model="/models/qwen"))
    results = gen.generate([request(seed=i) for i in range(3)])
    assert [r.value for r in results] == [{"queries": ["ao thun den"]}] * 3
    assert calls["model"] == "/models/qwen" and calls["n"] == 3
    assert calls["params"][0]["structured_outputs"] == ("structured", SCHEMA)


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="expected template, openai, vllm or transformers"):
        make_generator(GeneratorConfig(backend="gpt"))

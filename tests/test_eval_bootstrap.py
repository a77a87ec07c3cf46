"""Per-item evidence and the paired bootstrap: per-item values against independent
computations, resampled statistics against sklearn/scipy on explicit resamples, and intervals
that cover a known true difference at the nominal rate on simulated data."""

import hashlib

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.cluster import KMeans
from sklearn.metrics import average_precision_score, f1_score, v_measure_score

from compass_jax import jsonio
from compass_jax.eval import compare, evaluate, items, metrics
from compass_jax.eval.bootstrap import (
    compare_models,
    contrast,
    paired_draws,
    seed_spread,
    selection_weights,
)
from compass_jax.eval.claims import Claim, beats, difference_tables, differences, judge
from compass_jax.eval.runner import MAIN_SCORE
from compass_jax.eval.suite import Suite, Task


def _results(tasks: dict, model: str = "m", suite: str = "s") -> dict:
    """`evaluate`-shaped results from `{name: (type, lang, weight, evidence)}`."""
    out = {}
    for name, (kind, lang, weight, evidence) in tasks.items():
        scores = metrics.summarize(evidence)
        out[name] = {
            "type": kind,
            "lang": lang,
            "weight": weight,
            "main": scores[MAIN_SCORE[kind]],
            "metrics": scores,
            "items": jsonio.plain(evidence),
            "data_digest": name,
        }
    return {"suite": suite, "model": model, "tasks": out}


def _one(values, kind="retrieval", metric="ndcg@10", **kw) -> dict:
    return _results({"t-en": (kind, "en", 1.0, {metric: np.asarray(values)})}, **kw)


# --- per-item evidence from the runner -----------------------------------------------------


class _HashEncoder:
    """Bag of character trigrams hashed into 64 dimensions: similar texts embed close."""

    def __init__(self, path):
        self.path = self.source = str(path)
        self.cfg = type("Cfg", (), {"dtype": "float32"})()

    def encode(self, texts, prompt=None):
        out = np.zeros((len(texts), 64), np.float32)
        for row, text in enumerate(texts):
            for i in range(len(text) - 2):
                out[row, hashlib.md5(text[i : i + 3].encode()).digest()[0] % 64] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def _suite() -> Suite:
    rng = np.random.default_rng(0)
    words = ["sepatu", "lari", "merah", "biru", "tas", "kulit", "kopi", "teh", "panci", "gelas"]
    texts = [" ".join(rng.choice(words, 3)) + f" {i}" for i in range(40)]
    labels = [t.split()[0] for t in texts]
    short = [" ".join(t.split()[1:3]) for t in texts]  # two of the three words, no number
    rows = list(enumerate(zip(texts, short, labels, strict=True)))
    records = {
        "retrieval": [{"query": q, "relevant": [t]} for _, (t, q, _) in rows],
        "classification": [{"text": t, "label": y, "split": ("train", "test")[i % 2]}
                           for i, (t, _, y) in rows],
        "clustering": [{"text": t, "label": y} for _, (t, _, y) in rows],
        "pair_classification": [{"a": t, "b": q if i % 2 else texts[-i], "label": i % 2}
                                for i, (t, q, _) in rows],
        "sts": [{"a": t, "b": q, "score": i % 5} for i, (t, q, _) in rows],
        # the number reversed: sources stay distinct, so nearest neighbours have no ties
        "bitext": [{"source": f"{q} {str(i)[::-1]}", "target": t} for i, (t, q, _) in rows],
    }  # fmt: skip
    names = dict(zip(records, ("r-en", "c-en", "k-en", "p-en", "s-en", "b-en"), strict=True))
    corpus = {"retrieval": tuple(texts)}
    return Suite("toy", tuple(
        Task(names[kind], kind, tuple(r), "en", corpus=corpus.get(kind, ()))
        for kind, r in records.items()
    ))  # fmt: skip


def test_every_metric_stores_per_item_evidence_that_reproduces_it(tmp_path):
    suite, encoder = _suite(), _HashEncoder(tmp_path)
    results = evaluate(encoder, suite, progress=False)
    assert jsonio.loads(jsonio.dumps(results, indent=1)) == results  # strict JSON, exact floats
    tasks = {t.name: t for t in suite.tasks}
    for name, entry in results["tasks"].items():
        for metric, evidence in entry["items"].items():
            if isinstance(evidence, list):  # a mean over items: exactly the aggregate
                assert entry["metrics"][metric] == np.mean(evidence), (name, metric)
    embed = lambda texts: encoder.encode(list(texts))

    # retrieval: per query, from a full sort of the corpus (single relevant document each)
    r = tasks["r-en"]
    sim = embed(rec["query"] for rec in r.records) @ embed(r.corpus).T
    rank = np.array([list(np.argsort(-s, kind="stable")).index(i) + 1 for i, s in enumerate(sim)])
    stored = results["tasks"]["r-en"]["items"]
    np.testing.assert_allclose(stored["ndcg@10"], np.where(rank <= 10, 1 / np.log2(rank + 1), 0))
    np.testing.assert_allclose(stored["mrr@10"], np.where(rank <= 10, 1 / rank, 0))
    np.testing.assert_array_equal(stored["recall@1"], rank == 1)
    assert 0 < np.mean(stored["recall@1"]) < 1  # the toy task is neither trivial nor hopeless

    # classification: kNN correctness from a brute-force 5-NN majority vote
    c = tasks["c-en"]
    x = embed(rec["text"] for rec in c.records)
    y = np.unique([rec["label"] for rec in c.records], return_inverse=True)[1]
    train = np.array([rec["split"] == "train" for rec in c.records])
    near = np.argsort(-(x[~train] @ x[train].T), axis=1, kind="stable")[:, :5]
    knn = np.array([np.bincount(v).argmax() for v in y[train][near]])
    c_items = results["tasks"]["c-en"]["items"]
    np.testing.assert_array_equal(c_items["knn_accuracy"], knn == y[~train])
    f1 = f1_score(y[~train], knn, average="macro")
    assert results["tasks"]["c-en"]["metrics"]["knn_macro_f1"] == pytest.approx(f1, abs=1e-12)

    # clustering: sklearn's V-measure of the same k-means fit
    k = tasks["k-en"]
    x = embed(rec["text"] for rec in k.records)
    y = np.unique([rec["label"] for rec in k.records], return_inverse=True)[1]
    fitted = KMeans(n_clusters=y.max() + 1, n_init=3, random_state=0).fit_predict(x)
    v = results["tasks"]["k-en"]["metrics"]["v_measure"]
    assert v == pytest.approx(v_measure_score(y, fitted), abs=1e-12)

    # pair classification and STS: sklearn's AP and scipy's Spearman of the cosines
    oracles = {"p-en": ("label", lambda s, g: average_precision_score(g, s)),
               "s-en": ("score", lambda s, g: spearmanr(s, g).statistic)}  # fmt: skip
    for name, (field, oracle) in oracles.items():
        t = tasks[name]
        cos = np.sum(embed(r["a"] for r in t.records) * embed(r["b"] for r in t.records), 1)
        gold = np.array([rec[field] for rec in t.records])
        main = results["tasks"][name]["main"]
        assert main == pytest.approx(oracle(cos, gold), abs=1e-6), name

    # bitext: per pair, nearest neighbour both ways by a full argmax
    b = tasks["b-en"]
    src, tgt = embed(r["source"] for r in b.records), embed(r["target"] for r in b.records)
    forward = np.argmax(src @ tgt.T, 1) == np.arange(len(src))
    backward = np.argmax(tgt @ src.T, 1) == np.arange(len(src))
    b_items = results["tasks"]["b-en"]["items"]
    np.testing.assert_array_equal(b_items["accuracy_forward"], forward)
    np.testing.assert_array_equal(b_items["accuracy"], (forward + 0.0 + backward) / 2)
    assert 0 < np.mean(b_items["accuracy"]) < 1


# --- resampled statistics against the libraries, on explicit resamples ----------------------


def test_resampled_statistics_match_sklearn_and_scipy_on_each_resample():
    rng = np.random.default_rng(3)
    n = 60
    labels = rng.integers(0, 5, n)
    noisy = np.where(rng.random(n) < 0.6, labels, rng.integers(0, 7, n))
    scores, binary, gold = rng.normal(size=n), rng.integers(0, 2, n), rng.normal(size=n)
    index = rng.integers(0, n, (20, n))
    counts = np.stack([np.bincount(i, minlength=n) for i in index])
    cases = [
        (items.statistic("v_measure", labels=labels, clusters=noisy),
         lambda i: v_measure_score(labels[i], noisy[i])),
        (items.statistic("ap", scores=scores, labels=binary),
         lambda i: average_precision_score(binary[i], scores[i])),
        (items.statistic("spearman", scores=scores, gold=gold + scores),
         lambda i: spearmanr(scores[i], (gold + scores)[i]).statistic),
        (items.statistic("macro_f1", gold=labels, predicted=noisy),
         lambda i: f1_score(labels[i], noisy[i], average="macro")),
    ]  # fmt: skip
    for evidence, oracle in cases:
        expected = [oracle(i) for i in index]
        np.testing.assert_allclose(items.resampled(evidence, counts), expected, atol=1e-12)
        assert items.value(evidence) == pytest.approx(oracle(np.arange(n)), abs=1e-12)


def test_clustering_bootstrap_of_a_perfect_clustering_is_one_with_zero_width():
    labels = np.repeat(np.arange(6), 15)
    clusters = np.array([4, 0, 5, 1, 3, 2])[labels]  # the same partition, other cluster ids
    evidence = {"v_measure": items.statistic("v_measure", labels=labels, clusters=clusters)}
    perfect = _results({"clustering-en": ("clustering", "en", 1.0, evidence)})
    c = contrast({"m": perfect}, {"m": 1.0}, resamples=1000)
    assert (c.estimate, c.low, c.high) == (1.0, 1.0, 1.0)
    # the same imperfect partition under other cluster ids: exactly no difference
    noisy = np.where(np.arange(90) % 7 == 0, 0, clusters)
    same = {"v_measure": items.statistic("v_measure", labels=labels, clusters=(noisy + 3) % 6)}
    evidence = {"v_measure": items.statistic("v_measure", labels=labels, clusters=noisy)}
    one, other = (
        _results({"clustering-en": ("clustering", "en", 1.0, e)}) for e in (evidence, same)
    )
    c = compare_models(one, other)
    assert (c.estimate, c.low, c.high) == (0.0, 0.0, 0.0) and one != other


# --- the paired bootstrap: exact cases ------------------------------------------------------


def test_identical_models_differ_by_exactly_zero_with_a_zero_width_interval():
    rng = np.random.default_rng(0)
    a = _one(rng.random(150))
    c = compare_models(a, a)
    assert (c.estimate, c.low, c.high, c.verdict) == (0.0, 0.0, 0.0, "not shown")
    assert c.items == 150 and c.resamples == 1000 and c.runs == 1


def test_zero_difference_of_different_models_is_not_shown():
    rng = np.random.default_rng(1)
    values = rng.random(200)
    c = compare_models(_one(values), _one(rng.permutation(values)))
    assert abs(c.estimate) < 1e-12 and c.low < 0 < c.high
    assert c.verdict == "not shown"


def test_verdict_follows_the_claimed_direction():
    rng = np.random.default_rng(2)
    base = rng.random(300)
    better, worse = _one(np.minimum(base + 0.2, 1)), _one(base)
    assert compare_models(better, worse).verdict == "yes"
    assert compare_models(worse, better).verdict == "no"
    assert compare_models(worse, better, direction="less").verdict == "yes"


# --- coverage of a known true difference ----------------------------------------------------


def _coverage(simulate, truth: float, datasets: int = 200) -> float:
    hits = 0
    for i in range(datasets):
        c = compare_models(*simulate(np.random.default_rng(100 + i)), seed=i)
        hits += c.low <= truth <= c.high
    return hits / datasets


def test_paired_bootstrap_covers_a_known_difference_at_the_nominal_rate():
    # Item difficulty (sd 0.2) dominates the per-model noise (sd 0.1): an unpaired bootstrap
    # would cover about always, no resampling never; paired, the rate is near 95%.
    n, delta = 100, 0.03

    def simulate(rng):
        theta = rng.normal(0.6, 0.2, n)
        return (_one(theta + delta + rng.normal(0, 0.1, n)), _one(theta + rng.normal(0, 0.1, n)))

    rate = _coverage(simulate, delta)
    assert 0.91 <= rate <= 0.98, rate


def test_stratified_suite_average_covers_its_weighted_difference():
    # Three tasks of different sizes, weights and true differences, 0/1 items (accuracy).
    spec = {"a-en": (60, 1.0, 0.10), "b-en": (200, 2.0, 0.0), "c-th": (120, 0.5, -0.05)}
    truth = sum(w * d for _, w, d in spec.values()) / sum(w for _, w, _ in spec.values())

    def simulate(rng):
        tasks_a, tasks_b = {}, {}
        for name, (n, w, d) in spec.items():
            p = rng.uniform(0.3, 0.8, n)  # per-item difficulty, shared by both models
            shift = np.array([[d / 2], [-d / 2]])
            hit_a, hit_b = (rng.random((2, n)) < p + shift).astype(np.int8)
            tasks_a[name] = ("classification", name[-2:], w, {"accuracy": hit_a})
            tasks_b[name] = ("classification", name[-2:], w, {"accuracy": hit_b})
        return _results(tasks_a), _results(tasks_b)

    rate = _coverage(simulate, truth)
    assert 0.91 <= rate <= 0.985, rate


def test_stratified_bootstrap_variance_matches_the_analytic_variance():
    rng = np.random.default_rng(4)
    sizes, weights = {"x-en": 50, "x-id": 400, "y-en": 120}, {"x-en": 1.0, "x-id": 3.0, "y-en": 2.0}
    values = {t: rng.random(n) ** 3 for t, n in sizes.items()}
    results = _results({t: ("retrieval", t[2:], weights[t], {"ndcg@10": v})
                        for t, v in values.items()})  # fmt: skip
    w = selection_weights(results)
    assert w == pytest.approx({t: weights[t] / 6.0 for t in sizes})
    point, draws, n_items = paired_draws([results], w, resamples=8000, seed=1)
    analytic = sum(w[t] ** 2 * values[t].var() / sizes[t] for t in sizes)
    assert draws[:, 0].std() == pytest.approx(np.sqrt(analytic), rel=0.05)
    assert point[0] == pytest.approx(sum(w[t] * values[t].mean() for t in sizes), abs=1e-12)
    assert n_items == 570
    # a family's mean over languages weighs each language equally, whatever its size
    assert selection_weights(results, family="x") == {"x-en": 0.5, "x-id": 0.5}
    assert selection_weights(results, family="x", lang="id") == {"x-id": 1.0}


# --- repeated runs (seeds) ------------------------------------------------------------------


def test_seed_interval_covers_when_training_randomness_dominates():
    # Per run a shift (training randomness, sd 0.05) on top of per-item noise; 3 runs per arm.
    n, delta, runs = 100, 0.03, 3

    def simulate(rng):
        theta = rng.normal(0.6, 0.2, n)
        arm = lambda shift: [_one(theta + shift + rng.normal(0, 0.05) + rng.normal(0, 0.1, n))
                             for _ in range(runs)]  # fmt: skip
        return arm(delta), arm(0.0)

    rate = _coverage(simulate, delta)
    assert 0.91 <= rate <= 0.99, rate


def test_seed_spread_reports_each_arm_and_reduces_to_the_item_bootstrap_for_one_run():
    rng = np.random.default_rng(5)
    a = [_one(rng.random(80) + s) for s in (0.0, 0.1, 0.2)]
    b = [_one(rng.random(80)) for _ in range(3)]
    spread = seed_spread(a, b)
    means_a = [np.mean(r["tasks"]["t-en"]["items"]["ndcg@10"]) for r in a]
    assert spread["a"]["runs"] == pytest.approx(means_a, abs=1e-12)
    assert spread["a"]["std"] == pytest.approx(np.std(means_a, ddof=1), abs=1e-12)
    means_b = [np.mean(r["tasks"]["t-en"]["items"]["ndcg@10"]) for r in b]
    assert spread["difference"]["mean"] == pytest.approx(np.mean(means_a) - np.mean(means_b))
    c = spread["comparison"]
    assert c.runs == 3 and c.low < c.estimate < c.high and "3 runs" in c.method
    one = seed_spread(a[:1], b[:1])["comparison"]
    assert one == compare_models(a[0], b[0])
    # a model with one run (an untrained base) enters every pair
    assert compare_models(a, b[0]).estimate == pytest.approx(np.mean(means_a) - means_b[0])


def test_a_seed_spread_that_item_noise_explains_adds_nothing_to_the_interval():
    # Two runs whose item noise cancels in their average: the between-run spread (+-0.001) is
    # far below what item noise alone would give, so the seed part is 0 and the interval is
    # the items' alone (here a point: the averaged contrast is 0 on every item).
    rng = np.random.default_rng(7)
    v, e = rng.random(100), rng.normal(0, 0.1, 100)
    e += 0.001 - e.mean()
    c = compare_models([_one(v + e), _one(v - e)], [_one(v), _one(v)])
    assert c.estimate == pytest.approx(0.0, abs=1e-12) and c.runs == 2
    assert c.low == pytest.approx(0.0, abs=1e-12) and c.high == pytest.approx(0.0, abs=1e-12)


def test_run_mean_tables_are_the_means_of_the_runs_tables():
    rng = np.random.default_rng(8)
    runs = []
    for _ in range(3):
        r = _results({
            "search-en": ("retrieval", "en", 1.0, {"ndcg@10": rng.random(30)}),
            "search-id": ("retrieval", "id", 1.0, {"ndcg@10": rng.random(30)}),
            "xling-id": ("bitext", "id", 2.0, {"accuracy": (rng.random(30) > 0.5) * 1.0}),
        })  # fmt: skip
        weights = [t["weight"] for t in r["tasks"].values()]
        r["average"] = float(np.average([t["main"] for t in r["tasks"].values()], weights=weights))
        runs.append(r)
    mean = compare.run_mean(runs)
    assert mean["average"] == pytest.approx(np.mean([r["average"] for r in runs]))
    per_run = [compare.family_scores(r) for r in runs]
    for fam, langs in compare.family_scores(mean).items():
        for lang, value in langs.items():
            assert value == pytest.approx(np.mean([s[fam][lang] for s in per_run]))
    del runs[1]["tasks"]["xling-id"]
    with pytest.raises(ValueError, match="evaluated on different tasks"):
        compare.run_mean(runs)


# --- errors ---------------------------------------------------------------------------------


def test_results_on_different_items_or_without_items_are_refused():
    a = _one(np.ones(10))
    other = _one(np.ones(10))
    other["tasks"]["t-en"]["data_digest"] = "elsewhere"
    with pytest.raises(ValueError, match="task 't-en': the results were computed on different"):
        compare_models(a, other)
    old = _one(np.ones(10))
    del old["tasks"]["t-en"]["items"]
    with pytest.raises(ValueError, match="no per-item values for 'ndcg@10'"):
        compare_models(a, old)
    with pytest.raises(ValueError, match="no task of family 'search'"):
        compare_models(a, a, family="search")
    with pytest.raises(ValueError, match="runs per model must be one or a common number"):
        compare_models([a, a], [a, a, a])


# --- claims and tables ----------------------------------------------------------------------


def test_claims_and_difference_tables():
    rng = np.random.default_rng(6)
    theta = {lang: rng.random(120) for lang in ("en", "id")}

    def model(shift):
        return {"domain": _results({
            f"search-{lang}": ("retrieval", lang, 1.0, {"ndcg@10": np.clip(v + shift, 0, 1)})
            for lang, v in theta.items()})}  # fmt: skip

    scores = {"base": model(0.0), "tuned": model(0.1), "same": model(0.0)}
    rows = judge([
        beats("tuned beats base", "tuned", "base", "domain"),
        beats("same beats base", "same", "base", "domain", family="search", lang="id"),
        Claim("tuned keeps 95% of base", {"tuned": 1.0, "base": -0.95}, "domain", note="n"),
    ], scores)  # fmt: skip
    assert [r["verdict"] for r in rows] == ["yes", "not shown", "yes"]
    assert rows[0]["numbers"].startswith("tuned 0.") and "95% CI [+0.0" in rows[0]["numbers"]
    assert "tuned - 0.95 x base" in rows[2]["numbers"] and rows[2]["numbers"].endswith("; n")
    assert rows[0]["items"] == 240 and rows[1]["items"] == 120

    diffs = differences(scores["tuned"]["domain"], scores["base"]["domain"])
    assert set(diffs) == {"search", "average"} and set(diffs["search"]) == {"en", "id", "mean"}
    cell = diffs["search"]["id"]
    direct = compare_models(scores["tuned"]["domain"], scores["base"]["domain"], family="search",
                            lang="id")  # fmt: skip
    assert (cell["estimate"], cell["low"], cell["high"]) == (
        direct.estimate,
        direct.low,
        direct.high,
    )
    text = difference_tables(diffs, ("tuned", "base"))
    assert "| id | " in text and "| higher |" in text and "### weighted average" in text

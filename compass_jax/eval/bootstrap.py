"""Paired bootstrap intervals for comparisons of evaluation results.

A comparison is a contrast of models' aggregate scores on one suite: `a - b`, or any weighted
sum such as `merged - 0.98 * base`. An aggregate is the suite's weighted average, a task
family's mean over languages, or one language's share of either (`selection_weights`); in every
case a weighted sum of task scores, each task's score a metric of its items (`items`).

**One run per model** (`compare_models(a, b)`): a resample draws each task's items with
replacement *within the task* (stratified: every task keeps its size and weight), the same draws
for every model (paired: what the models share per item cancels out of their difference),
recomputes every task's metric on the draw and the weighted sum. The interval is the percentile
interval of the resampled contrast. Percentile rather than BCa: BCa's acceleration needs a
jackknife over every item of every task, for whole-set statistics (V-measure) one refit per
item, and with hundreds of items per task the percentile interval already covers at the nominal
rate (tests/test_eval_bootstrap.py measures it).

**Repeated runs** (a list of results per model, one per training seed; `seed_spread`): runs of
one model pair with the other's by position (same seed, same data order), models with one run
(an untrained base) enter every pair. The estimate is the mean over runs of the per-run contrast
`d_s`; its variance has two parts: evaluation sampling, the item-bootstrap variance `B` of the
run-averaged contrast, and training randomness, the between-run variance of `d_s` over `N`
runs, `s^2 / N`, less the part of it that item noise already explains (`(mean_s B_s - B) /
(N - 1)`, `B_s` the bootstrap variance of run `s` alone; clamped at 0). The interval is
`estimate +- t * sqrt(B + seed part)`, with Satterthwaite's degrees of freedom for the
between-run term's `N - 1`. A plain t-interval over seeds would miss the item sampling that
every run shares (one test split); resampling three seeds hierarchically would understate their
spread.

The verdict: "yes" when the interval lies wholly on the claimed side of the threshold (above
for `direction="greater"`), "no" when wholly on the other side, "not shown" otherwise.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from jaxtyping import Float

from compass_jax.eval import compare, items
from compass_jax.eval.runner import MAIN_SCORE

Results = Mapping[str, Any]  # one `evaluate(...)` result
Runs = Results | Sequence[Results]  # one result, or one per training run (seed)
_BLOCK = 256  # resamples drawn at once: memory `_BLOCK x items` per task


@dataclasses.dataclass(frozen=True)
class Comparison:
    """A contrast's estimate, its interval and the verdict on the claim it tests."""

    estimate: float
    low: float
    high: float
    verdict: str  # "yes" | "no" | "not shown"
    items: int  # evaluation items resampled (over every task of the selection)
    runs: int  # runs per model (seeds); 1: the interval is the item bootstrap alone
    resamples: int
    level: float
    method: str
    threshold: float = 0.0
    direction: str = "greater"
    run_std: float | None = None  # standard deviation of the per-run contrast over runs

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def selection_weights(
    results: Results, *, family: str | None = None, lang: str | None = None
) -> dict[str, float]:
    """`{task: weight}` such that the aggregate is `sum(weight * task score)`: without `family`
    the suite's weighted average (of the tasks in `lang`, if given); with it, the family's mean
    over languages of its tasks' mean per language (`compare.family_means`), or its mean in
    `lang`."""
    tasks = results["tasks"]
    if family is None:
        chosen = {n: t["weight"] for n, t in tasks.items() if lang in (None, t["lang"])}
        if not chosen:
            raise ValueError(f"suite {results['suite']!r}: no task in language {lang!r}")
        total = sum(chosen.values())
        return {n: w / total for n, w in chosen.items()}
    by_lang: dict[str, list[str]] = defaultdict(list)
    for name, t in tasks.items():
        if compare.family(name, t["lang"]) == family and lang in (None, t["lang"]):
            by_lang[t["lang"]].append(name)
    if not by_lang:
        where = "" if lang is None else f" in language {lang!r}"
        raise ValueError(f"suite {results['suite']!r}: no task of family {family!r}{where}")
    return {n: 1 / (len(by_lang) * len(names)) for names in by_lang.values() for n in names}


def _task_metric(results: Results, task: str, metric: str | None) -> tuple[float, items.Item]:
    """The task's `metric` (by default its main score) and the per-item evidence behind it."""
    entry = results["tasks"].get(task)
    if entry is None:
        raise ValueError(f"suite {results['suite']!r}, model {results['model']}: no task {task!r}")
    name = metric or MAIN_SCORE[entry["type"]]
    evidence = entry.get("items", {}).get(name)
    if evidence is None:
        raise ValueError(
            f"suite {results['suite']!r}, task {task!r}, model {results['model']}: no per-item "
            f"values for {name!r} (results of an older compass-jax: evaluate again)"
        )
    return entry["metrics"][name], evidence


def _counts(rng: np.random.Generator, n: int, size: int) -> items.Counts:
    """`size` resamples of `n` items with replacement, as multiplicities (rows sum to `n`)."""
    drawn = rng.integers(0, n, (size, n)) + np.arange(size)[:, None] * n
    return np.bincount(drawn.ravel(), minlength=size * n).reshape(size, n)


def paired_draws(
    runs: Sequence[Results],
    weights: Mapping[str, float],
    *,
    metric: str | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[Float[np.ndarray, " m"], Float[np.ndarray, "resamples m"], int]:
    """Each result's aggregate `sum(weight * task score)` on all items and on `resamples`
    stratified resamples shared by every result, and the number of items resampled.

    A task's draws depend on `seed` and its name only, so one task resamples alike in every
    selection it is part of (a language's row and the family's mean)."""
    point, draws, n_items = np.zeros(len(runs)), np.zeros((resamples, len(runs))), 0
    for task, weight in weights.items():
        values, evidence = zip(*(_task_metric(r, task, metric) for r in runs), strict=True)
        n = items.size(evidence[0])
        digests = {r["tasks"][task].get("data_digest") for r in runs}
        if len(digests) > 1 or any(items.size(ev) != n for ev in evidence):
            raise ValueError(f"task {task!r}: the results were computed on different items")
        rng = np.random.default_rng([seed, zlib.crc32(task.encode())])
        for start in range(0, resamples, _BLOCK):
            counts = _counts(rng, n, min(_BLOCK, resamples - start))
            for j, ev in enumerate(evidence):
                resampled = items.resampled(ev, counts)
                if not np.all(np.isfinite(resampled)):
                    raise ValueError(f"task {task!r}: the metric is undefined on some resamples")
                draws[start : start + len(counts), j] += weight * resampled
        point += weight * np.array(values)
        n_items += n
    return point, draws, n_items


def aggregate(
    results: Results, *, family: str | None = None, lang: str | None = None, metric=None
) -> float:
    """One result's aggregate (`selection_weights`) on all its items; no resampling."""
    weights = selection_weights(results, family=family, lang=lang)
    return float(sum(w * _task_metric(results, t, metric)[0] for t, w in weights.items()))


def verdict(low: float, high: float, threshold: float = 0.0, direction: str = "greater") -> str:
    """ "yes" when `[low, high]` lies wholly on the claimed side of `threshold`, "no" when
    wholly on the other, "not shown" otherwise."""
    if direction not in ("greater", "less"):
        raise ValueError(f"direction must be 'greater' or 'less', got {direction!r}")
    above, below = low > threshold, high < threshold
    shown, opposite = (above, below) if direction == "greater" else (below, above)
    return "yes" if shown else "no" if opposite else "not shown"


def as_runs(value: Runs) -> list[Results]:
    """One result, or one per run, as a list."""
    return [value] if isinstance(value, Mapping) else list(value)


def _interval(
    per_run: Float[np.ndarray, " runs"],
    per_draw: Float[np.ndarray, "resamples runs"],
    n_items: int,
    *,
    level: float,
    threshold: float,
    direction: str,
) -> Comparison:
    """The interval of the mean over runs of a contrast (per run on all items, and resampled)."""
    from scipy.stats import t as student_t

    n_runs, resamples = per_draw.shape[1], len(per_draw)
    estimate = float(per_run.mean())
    if n_runs == 1:
        low, high = np.quantile(per_draw[:, 0], [(1 - level) / 2, (1 + level) / 2])
        method, run_std = "paired percentile bootstrap over items, stratified by task", None
    else:
        items_var = per_draw.mean(1).var(ddof=1)
        item_noise = (per_draw.var(0, ddof=1).mean() - items_var) / (n_runs - 1)
        between = per_run.var(ddof=1) / n_runs
        seed_part = max(between - item_noise, 0.0)
        variance = items_var + seed_part
        # Satterthwaite: the between-run estimate carries N - 1 degrees of freedom, the item
        # bootstrap infinitely many. A seed part that item noise explains (clamped to 0) adds
        # nothing to the variance, so it must not shrink the degrees of freedom either: with
        # identical per-item contrasts (two arms trained alike) they would reach 0, the t
        # quantile infinity and the interval nonsense.
        dof = np.inf if seed_part == 0 else variance**2 * (n_runs - 1) / between**2
        half = float(student_t.ppf((1 + level) / 2, dof) * np.sqrt(variance))
        low, high = estimate - half, estimate + half
        method = (
            f"mean over {n_runs} runs; t interval on the item-bootstrap variance plus the "
            "between-run variance (Satterthwaite degrees of freedom)"
        )
        run_std = float(per_run.std(ddof=1))
    low, high = float(low), float(high)
    return Comparison(
        estimate, low, high, verdict(low, high, threshold, direction), n_items, n_runs,
        resamples, level, method, threshold, direction, run_std,
    )  # fmt: skip


def contrast(
    scores: Mapping[str, Runs],
    coefficients: Mapping[str, float],
    *,
    family: str | None = None,
    lang: str | None = None,
    metric: str | None = None,
    threshold: float = 0.0,
    direction: str = "greater",
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Comparison:
    """`sum(coefficients[m] * aggregate(scores[m]))` with its interval and the verdict on
    "the contrast is above `threshold`" (`direction="greater"`; "less": below).

    `scores[m]` is one `evaluate(...)` result on the suite, or a list of them, one per training
    run (seed): runs pair by position, a model with one run enters every pair. The aggregate is
    `selection_weights(family=, lang=)` over each task's main score, or over `metric`.
    `{"a": 1}` alone gives one model's score with its interval.

    Example:
        contrast({"merged": merged, "base": base}, {"merged": 1, "base": -0.98}).verdict
    """
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples}")
    runs = {label: as_runs(scores[label]) for label in coefficients}
    sizes = {label: len(r) for label, r in runs.items()}
    if 0 in sizes.values() or len(set(sizes.values()) - {1}) > 1:
        raise ValueError(f"runs per model must be one or a common number, got {sizes}")
    n_runs = max(sizes.values())
    flat = [r for label in coefficients for r in runs[label]]
    weights = selection_weights(flat[0], family=family, lang=lang)
    point, draws, n_items = paired_draws(
        flat, weights, metric=metric, resamples=resamples, seed=seed
    )
    per_run, per_draw, column = np.zeros(n_runs), np.zeros((resamples, n_runs)), 0
    for label, c in coefficients.items():
        k = sizes[label]  # a single run (k = 1) broadcasts over the pairs
        per_run += c * point[column : column + k]
        per_draw += c * draws[:, column : column + k]
        column += k
    return _interval(
        per_run, per_draw, n_items, level=level, threshold=threshold, direction=direction
    )


def compare_models(a: Runs, b: Runs, **options) -> Comparison:
    """The difference `a - b` of two models' aggregates on the same suite, with a paired,
    task-stratified bootstrap interval (`contrast`'s options: `family`, `lang`, `metric`,
    `direction`, `resamples`, `seed`, `level`). Lists of results (one per seed) give the
    two-level interval over seeds and items.

    Example:
        compare_models(cam, no_cam, family="clustering").verdict  # "yes" | "no" | "not shown"
    """
    return contrast({"a": a, "b": b}, {"a": 1.0, "b": -1.0}, **options)


def seed_spread(
    runs_a: Sequence[Results],
    runs_b: Sequence[Results],
    *,
    family: str | None = None,
    lang: str | None = None,
    metric: str | None = None,
    **options,
) -> dict[str, Any]:
    """Two models trained `N` times each (paired by position: the same seed for both):
    `{"a": {mean, std, runs}, "b": ..., "difference": ..., "comparison": Comparison}`, each
    run's value its aggregate (`selection_weights`), `std` over runs (ddof 1), and the
    comparison `compare_models` makes of the two lists (`options`: its other options)."""
    select = dict(family=family, lang=lang, metric=metric)
    a = np.array([aggregate(r, **select) for r in runs_a])
    b = np.array([aggregate(r, **select) for r in runs_b])
    spread = lambda v: {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
        "runs": v.tolist(),
    }
    return {
        "a": spread(a),
        "b": spread(b),
        "difference": spread(a - b),
        "comparison": compare_models(list(runs_a), list(runs_b), **select, **options),
    }

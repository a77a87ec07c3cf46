"""The claims the demo is judged by, each a contrast with a 95% interval and a verdict
(`compass_jax.eval.claims`), and the per-seed figures behind the CAM comparison.

`scores` maps a label to `{suite: results}`, or, for the trained arms, to a list of those, one
per training seed (seed 0 first): `CAM` and `no-CAM` carry every seed on the domain suite, and
seed 0 alone also on the general suite (the run the sweep merges and the exports come from).
Claims about the merge name that run `CAM seed 0`: the merge is made of it, so it pairs with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from compass_jax.eval import bootstrap
from compass_jax.eval.claims import Claim, Scores, beats, differences, judge, score

CHECK_RESAMPLES = 1000  # bootstrap resamples behind every interval of the report
SEED0 = "CAM seed 0"
# (family, metric, what it is): the CAM comparisons, per seed and in the checks
CAM_METRICS = (
    ("category", None, "classification accuracy"),
    ("category", "knn_accuracy", "kNN classification accuracy"),
    ("clustering", None, "clustering V-measure"),
    (None, None, "domain average"),
)


def with_seed0(scores: Scores) -> dict[str, Any]:
    """`scores` with `CAM seed 0`: the first CAM run alone."""
    cam = scores["CAM"]
    return {**scores, SEED0: cam if isinstance(cam, Mapping) else cam[0]}


def demo_claims(scores: Scores, sweep: Mapping[str, Any]) -> list[Claim]:
    """Training helps; CAM beats its ablation (over every seed); the tuned model forgets on the
    general suite; the merge recovers most of that loss, keeps most of the domain gain and 98% of
    the base's general score."""
    scores = with_seed0(scores)
    mean = lambda label, suite: score(scores, label, suite)
    gain = mean(SEED0, "domain") - mean("base", "domain")
    loss = mean("base", "general") - mean(SEED0, "general")
    kept = (mean("merged", "domain") - mean("base", "domain")) / gain if gain > 0 else None
    back = (mean("merged", "general") - mean(SEED0, "general")) / loss if loss > 0 else None
    ratio = mean("merged", "general") / mean("base", "general")
    half = {"merged": 1.0, SEED0: -0.5, "base": -0.5}
    t = f"t = {sweep['best_t']}"
    return [
        beats("trained (CAM) beats the base on the e-commerce test split", "CAM", "base",
              "domain"),
        beats("CAM beats no-CAM on classification", "CAM", "no-CAM", "domain", family="category"),
        beats("CAM beats no-CAM on kNN classification", "CAM", "no-CAM", "domain",
              family="category", metric="knn_accuracy"),
        beats("CAM beats no-CAM on clustering", "CAM", "no-CAM", "domain", family="clustering"),
        beats("the tuned model (CAM seed 0) forgets: below the base on the general suite",
              "base", SEED0, "general", note=f"{100 * loss:+.1f} points lost"),
        Claim("merged recovers most (> 50%) of the general loss", half, "general",
              note=f"{t}: no loss to recover" if back is None else f"{t}: {back:.0%} recovered"),
        Claim("merged keeps most (> 50%) of the domain gain", half, "domain",
              note=f"{t}: no gain to keep" if kept is None else f"{t}: {kept:.0%} kept"),
        Claim("merged keeps >= 98% of the base's general score", {"merged": 1.0, "base": -0.98},
              "general", note=f"{t}: {ratio:.1%} of the base"),
    ]  # fmt: skip


def checks(
    scores: Scores,
    fp8: Mapping[str, Any],
    sweep: Mapping[str, Any],
    claims: Sequence[Claim] | None = None,
    *,
    resamples: int = CHECK_RESAMPLES,
    seed: int = 0,
) -> list[dict]:
    """Each claim (`demo_claims` by default) judged by a paired bootstrap over the suite's items,
    over seeds where a model has several runs (`claims.judge`), and the FP8 export's embedding
    agreement, measured on every text of the suite (no sample to draw an interval from)."""
    claims = claims or demo_claims(scores, sweep)
    rows = judge(claims, with_seed0(scores), resamples=resamples, seed=seed)
    cosine = fp8["all"]
    rows.append({
        "claim": "FP8 export embeddings: mean cosine >= 0.99 to bf16",
        "verdict": "yes" if cosine["mean"] >= 0.99 else "no",
        "estimate": cosine["mean"],
        "numbers": f"mean {cosine['mean']:.5f}, min {cosine['min']:.5f} over {cosine['n']} "
                   "texts (every text of the suite, no sampling)",
    })  # fmt: skip
    return rows


def seed_table(scores: Scores) -> list[dict[str, Any]]:
    """Per CAM metric: CAM's and no-CAM's value in each seed's run and their difference
    (`bootstrap.seed_spread`: mean and standard deviation over seeds, the interval over seeds
    and items)."""
    rows = []
    for fam, metric, what in CAM_METRICS:
        runs = {label: [run["domain"] for run in scores[label]] for label in ("CAM", "no-CAM")}
        spread = bootstrap.seed_spread(
            runs["CAM"], runs["no-CAM"], family=fam, metric=metric, resamples=CHECK_RESAMPLES
        )
        rows.append({"metric": what, "CAM": spread["a"], "no-CAM": spread["b"],
                     "difference": spread["difference"],
                     "comparison": spread["comparison"].to_json()})  # fmt: skip
    return rows


def fp8_differences(scores: Scores, **options) -> dict[str, dict]:
    """FP8 export minus bf16 export on every suite, task family and language, with intervals
    (`claims.differences`)."""
    fp8, bf16 = scores["FP8 export"], scores["bf16 export"]
    return {suite: differences(fp8[suite], bf16[suite], **options) for suite in fp8}

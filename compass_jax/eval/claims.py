"""Claims about models, judged with their uncertainty, and per-language tables of differences.

A report states claims ("CAM beats no-CAM on clustering") and each row carries the contrast, its
95% interval and a verdict that says "yes" only when the interval excludes 0 on the claimed side
(`compass_jax.eval.bootstrap`).

```python
from compass_jax.eval.claims import beats, judge

claims = [beats("CAM beats no-CAM on clustering", "CAM", "no-CAM", "domain", family="clustering")]
rows = judge(claims, {"CAM": {"domain": cam}, "no-CAM": {"domain": no_cam}})
rows[0]["verdict"], rows[0]["numbers"]
```
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from compass_jax.eval import bootstrap, compare
from compass_jax.eval.bootstrap import Comparison, Results, Runs

# label -> {suite name: results}, or a list of those (one per training run)
Scores = Mapping[str, Mapping[str, Results] | Sequence[Mapping[str, Results]]]


@dataclasses.dataclass(frozen=True)
class Claim:
    """`sum(coefficients[m] * score(m)) > threshold` on `suite` (`direction="less"`: below),
    a model's score being the suite's weighted average, a `family`'s mean over languages, or
    either in one `lang`, over each task's main score or `metric` (`bootstrap.contrast`).
    `note` is appended to the row's numbers (context the contrast does not carry)."""

    text: str
    coefficients: Mapping[str, float]
    suite: str
    family: str | None = None
    lang: str | None = None
    metric: str | None = None
    threshold: float = 0.0
    direction: str = "greater"
    note: str = ""

    def selection(self) -> dict[str, str | None]:
        return {"family": self.family, "lang": self.lang, "metric": self.metric}


def beats(text: str, a: str, b: str, suite: str, **options: Any) -> Claim:
    """The claim "`a` scores higher than `b`" (`direction="less"`: lower); `options` as
    `Claim`'s (`family`, `lang`, `metric`, `note`)."""
    return Claim(text, {a: 1.0, b: -1.0}, suite, **options)


def runs_of(scores: Scores, label: str, suite: str) -> list[Results]:
    """`label`'s results on `suite`, one per run."""
    value = scores[label]
    return [value[suite]] if isinstance(value, Mapping) else [run[suite] for run in value]


def score(scores: Scores, label: str, suite: str, **selection: str | None) -> float:
    """`label`'s aggregate on `suite` (`bootstrap.aggregate`), the mean over its runs."""
    runs = runs_of(scores, label, suite)
    return float(np.mean([bootstrap.aggregate(r, **selection) for r in runs]))


def _contrast_text(coefficients: Mapping[str, float]) -> str:
    terms = []
    for i, (label, c) in enumerate(coefficients.items()):
        sign = "-" if c < 0 else "+" if i else ""
        scale = "" if abs(c) == 1 else f"{abs(c):g} x "
        terms.append(f"{sign} {scale}{label}".strip())
    return " ".join(terms)


def numbers(claim: Claim, scores: Scores, comparison: Comparison) -> str:
    """Each model's score (mean +- std over runs), the contrast with its interval, the items."""
    parts = []
    for label in claim.coefficients:
        values = [
            bootstrap.aggregate(r, **claim.selection()) for r in runs_of(scores, label, claim.suite)
        ]
        spread = f" +- {np.std(values, ddof=1):.4f} ({len(values)} runs)" if len(values) > 1 else ""
        parts.append(f"{label} {np.mean(values):.4f}{spread}")
    level = f"{comparison.level:.0%}"
    threshold = f" vs {claim.threshold:g}" if claim.threshold else ""
    text = (
        f"{', '.join(parts)}; {_contrast_text(claim.coefficients)} = "
        f"{comparison.estimate:+.4f}{threshold}, {level} CI [{comparison.low:+.4f}, "
        f"{comparison.high:+.4f}] ({comparison.items:,} items)"
    )
    return f"{text}; {claim.note}" if claim.note else text


def judge(
    claims: Sequence[Claim], scores: Scores, *, resamples: int = 1000, seed: int = 0, level=0.95
) -> list[dict[str, Any]]:
    """One row per claim: `{"claim", "numbers", **Comparison.to_json()}` (the verdict, the
    estimate and its interval among them); `scores` as `Scores`."""
    rows = []
    for claim in claims:
        comparison = bootstrap.contrast(
            {label: runs_of(scores, label, claim.suite) for label in claim.coefficients},
            claim.coefficients,
            **claim.selection(),
            threshold=claim.threshold,
            direction=claim.direction,
            resamples=resamples,
            seed=seed,
            level=level,
        )
        row = {"claim": claim.text, "numbers": numbers(claim, scores, comparison)}
        rows.append(row | comparison.to_json())
    return rows


def differences(a: Runs, b: Runs, **options: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """`a - b` on one suite for every task family, per language and for the family's mean
    (`"mean"`), and for the suite's weighted average (`{"average": {"all": ...}}`): each cell
    both models' scores (`"a"`, `"b"`: means over runs) and the difference with its interval
    (`Comparison.to_json()`; `options`: `bootstrap.compare_models`' `metric` and the others).
    Intervals are per cell, not adjusted for the number of cells."""
    runs_a, runs_b = bootstrap.as_runs(a), bootstrap.as_runs(b)
    metric = options.get("metric")

    def cell(**select: str) -> dict[str, Any]:
        score = lambda runs: float(
            np.mean([bootstrap.aggregate(r, **select, metric=metric) for r in runs])
        )
        comparison = bootstrap.compare_models(runs_a, runs_b, **select, **options)
        return {"a": score(runs_a), "b": score(runs_b), **comparison.to_json()}

    out = {}
    for fam, langs in compare.family_scores(runs_a[0]).items():
        out[fam] = {lang: cell(family=fam, lang="" if lang == "-" else lang) for lang in langs}
        out[fam]["mean"] = cell(family=fam)
    out["average"] = {"all": cell()}
    return out


_SHOWN = {"yes": "higher", "no": "lower", "not shown": "not shown"}


def difference_tables(
    diffs: Mapping[str, Mapping[str, Mapping[str, Any]]],
    labels: tuple[str, str] = ("a", "b"),
    *,
    heading: str = "###",
) -> str:
    """`differences(a, b)` as Markdown: one table per family (and one for the weighted
    average), rows languages and the family mean, columns both models' scores, `a - b`, its
    interval and whether `a` is shown higher or lower ("not shown": the interval includes 0)."""
    out = []
    for fam, rows in diffs.items():
        level = next(iter(rows.values()))["level"]
        title = "weighted average over tasks" if fam == "average" else fam
        out += [f"{heading} {title}", "",
                f"| lang | {labels[0]} | {labels[1]} | difference | {level:.0%} CI | shown |",
                "|---|---|---|---|---|---|"]  # fmt: skip
        for lang, c in rows.items():
            name = f"**{lang}**" if lang in ("mean", "all") else lang
            out.append(
                f"| {name} | {c['a']:.4f} | {c['b']:.4f} | {c['estimate']:+.4f} | "
                f"[{c['low']:+.4f}, {c['high']:+.4f}] | {_SHOWN[c['verdict']]} |"
            )
        out.append("")
    return "\n".join(out)

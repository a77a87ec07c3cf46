"""The demo's report: the checks the run is judged by, the training curves and `report.md` /
`report.json` (every figure computed by the run)."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence
from typing import Any

from compass_jax import jsonio
from compass_jax.atomic import atomic_path
from compass_jax.eval.claims import (
    Claim,
    Scores,
    beats,
    difference_tables,
    differences,
    judge,
    score,
)

CHECK_RESAMPLES = 1000  # bootstrap resamples behind every interval of the report


def demo_claims(scores: Scores, sweep: dict) -> list[Claim]:
    """The claims the run is judged by: training helps, CAM helps, the merge keeps the base's
    general skills and most of the domain gain. A later experiment adds its claims to these
    (`checks(claims=...)`); models may carry one result per seed (`claims.Scores`)."""
    mean = lambda label, suite: score(scores, label, suite)
    gain = mean("CAM", "domain") - mean("base", "domain")
    kept = (mean("merged", "domain") - mean("base", "domain")) / gain if gain > 0 else None
    ratio = mean("merged", "general") / mean("base", "general")
    return [
        beats("trained (CAM) beats the base on the e-commerce test split", "CAM", "base",
              "domain"),
        beats("CAM beats no-CAM on classification", "CAM", "no-CAM", "domain", family="category"),
        beats("CAM beats no-CAM on kNN classification", "CAM", "no-CAM", "domain",
              family="category", metric="knn_accuracy"),
        beats("CAM beats no-CAM on clustering", "CAM", "no-CAM", "domain", family="clustering"),
        Claim("merged keeps >= 98% of the base's general score", {"merged": 1.0, "base": -0.98},
              "general", note=f"{ratio:.1%} of the base (t = {sweep['best_t']})"),
        Claim("merged keeps most (> 50%) of the domain gain",
              {"merged": 1.0, "CAM": -0.5, "base": -0.5}, "domain",
              note="no gain to keep" if kept is None else f"{kept:.0%} of the gain kept"),
    ]  # fmt: skip


def checks(
    scores: Scores,
    fp8: dict,
    sweep: dict,
    claims: Sequence[Claim] | None = None,
    *,
    resamples: int = CHECK_RESAMPLES,
    seed: int = 0,
) -> list[dict]:
    """Each claim (`demo_claims` by default) judged by a paired bootstrap over the suite's
    items (`claims.judge`), and the FP8 export's embedding agreement, measured on every text
    of the suite (no sample to draw an interval from)."""
    rows = judge(claims or demo_claims(scores, sweep), scores, resamples=resamples, seed=seed)
    cosine = fp8["all"]
    rows.append({
        "claim": "FP8 export embeddings: mean cosine >= 0.99 to bf16",
        "verdict": "yes" if cosine["mean"] >= 0.99 else "no",
        "estimate": cosine["mean"],
        "numbers": f"mean {cosine['mean']:.5f}, min {cosine['min']:.5f} over {cosine['n']} "
                   "texts (every text of the suite, no sampling)",
    })  # fmt: skip
    return rows


def fp8_differences(scores: Scores, **options) -> dict[str, dict]:
    """FP8 export minus bf16 export on every suite, task family and language, with intervals
    (`claims.differences`)."""
    fp8, bf16 = scores["FP8 export"], scores["bf16 export"]
    return {suite: differences(fp8[suite], bf16[suite], **options) for suite in fp8}


def plot_training(histories: dict[str, list[dict]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("loss", "CAM-InfoNCE loss (as trained)"), ("top1", "in-batch top-1")]
    fig, axes = plt.subplots(1, len(panels), figsize=(10, 3.4))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for name, history in histories.items():
            rows = [r for r in history if key in r]
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], marker=".", label=name)
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


_VERDICT = {"yes": "yes", "no": "**no**", "not shown": "not shown"}
MASK_KINDS = ("class", "duplicate", "margin", "any")


def masked_shares(histories: dict[str, list[dict]]) -> list[str]:
    """Per training arm and task, the mean over logged steps of the share of in-batch candidate
    pairs each CAM mask removed (`compass_jax.losses`: kinds counted separately, "any" once)."""
    rows = []
    for arm, history in histories.items():
        by_task: dict[str, list[dict]] = {}
        for record in history:
            if "masked_any" in record:
                by_task.setdefault(str(record.get("task", "default")), []).append(record)
        for task, records in sorted(by_task.items()):
            means = [sum(r[f"masked_{k}"] for r in records) / len(records) for k in MASK_KINDS]
            rows.append(f"| {arm} | {task} | {len(records)} | "
                        + " | ".join(f"{m:.3f}" for m in means) + " |")  # fmt: skip
    if not rows:
        return []
    return ["## CAM masks during training", "",
            "Share of in-batch (anchor, candidate) pairs each mask removed, mean over logged "
            "steps; a pair removed for two reasons counts under both, `any` counts it once.", "",
            "| arm | task | steps | class | duplicate | margin | any |",
            "|---|---|---|---|---|---|---|", *rows, ""]  # fmt: skip


def _fp8_sections(report: dict[str, Any]) -> list[str]:
    """FP8 export minus bf16 export, per suite, family and language, with intervals."""
    if "fp8_vs_bf16" not in report:
        return []
    out = ["## FP8 export vs bf16 export: score differences with 95% intervals", "",
           "Paired bootstrap over each task's items; one interval per row, not adjusted for the "
           "number of rows (about 1 in 20 rows may show a difference by chance).", ""]  # fmt: skip
    labels = ("FP8 export", "bf16 export")
    for suite, diffs in report["fp8_vs_bf16"].items():
        out += [f"### {suite}", "", difference_tables(diffs, labels, heading="####")]
    return out


def write_report(out: str, report: dict[str, Any]) -> str:
    from compass_jax.eval.compare import family_tables, summary_table

    by_suite = lambda suite: {m: s[suite] for m, s in report["scores"].items()}
    lines = [
        f"# compass-jax demo ({report['size']})",
        "",
        f"{report['date']}; {report['machine_line']}; {report['seconds_total']:.0f} s in all "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in report['stage_seconds'].items())}).",
        "",
        f"Base model `{report['model']}`; training: {report['training']}; merge: SLERP t = "
        f"{report['sweep']['best_t']} of {report['sweep']['ts']}.",
        "",
        "## Checks",
        "",
        "Each claim with a 95% interval from a paired bootstrap over the evaluation items "
        f'({CHECK_RESAMPLES} resamples, stratified by task); "yes" only when the interval '
        'excludes 0 on the claimed side, "no" when it excludes 0 on the other.',
        "",
        "| claim | shown | numbers |",
        "|---|---|---|",
        *[
            f"| {c['claim']} | {_VERDICT[c['verdict']]} | {c['numbers']} |"
            for c in report["checks"]
        ],
        "",
        "## E-commerce test split (main scores)",
        "",
        summary_table(by_suite("domain")),
        family_tables(by_suite("domain")),
        "## General suite (forgetting check)",
        "",
        summary_table(by_suite("general")),
        family_tables(by_suite("general")),
        *_fp8_sections(report),
        *masked_shares(report.get("histories", {})),
        "## FP8 export vs bf16 export (embedding cosine)",
        "",
        "| lang | texts | mean | min |",
        "|---|---|---|---|",
        *[
            f"| {lang} | {s['n']} | {s['mean']:.5f} | {s['min']:.5f} |"
            for lang, s in report["fp8_cosine"]["per_language"].items()
        ],
        "",
        "Plots: `training.png` (training curves), `sweep/sweep.png` (merge sweep).",
        "",
    ]
    text = "\n".join(lines)
    jsonio.write_json(os.path.join(out, "report.json"), report)
    with atomic_path(os.path.join(out, "report.md")) as tmp:
        pathlib.Path(tmp).write_text(text, encoding="utf-8")
    return text

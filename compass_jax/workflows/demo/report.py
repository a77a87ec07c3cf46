"""The demo's report: `report.md` / `report.json` (every figure computed by the run) and the
training curves. The claims and their intervals are computed in `claims.py`."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping
from typing import Any

from compass_jax import jsonio
from compass_jax.atomic import atomic_path
from compass_jax.eval.claims import difference_tables
from compass_jax.eval.compare import family_tables, run_mean, summary_table
from compass_jax.workflows.demo.claims import CHECK_RESAMPLES
from compass_jax.workflows.demo.density import density_markdown

FIGURES = {  # report figure -> its file under the demo's output directory
    "training curves": "training.png",
    "merge sweep": "sweep/sweep.png",
    "CAM minus no-CAM by same-class share": "cam-density/density.png",
}


def figures(out: str, *, density: bool) -> list[str]:
    """The report's figures written under `out` (the density plot only with its experiment)."""
    names = [n for n in FIGURES if density or not n.startswith("CAM minus")]
    return [FIGURES[n] for n in names if os.path.isfile(os.path.join(out, FIGURES[n]))]


def plot_training(histories: dict[str, list[dict]], path: str) -> None:
    """Loss and in-batch top-1 against the step, one line per run (colour: arm, style: seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("loss", "CAM-InfoNCE loss (as trained)"), ("top1", "in-batch top-1")]
    colours, styles = {}, ("-", "--", ":", "-.")
    fig, axes = plt.subplots(1, len(panels), figsize=(10, 3.4))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for i, (name, history) in enumerate(histories.items()):
            arm = name.split(" seed ")[0]
            colour = colours.setdefault(arm, f"C{len(colours)}")
            rows = [r for r in history if key in r]
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], color=colour,
                    ls=styles[i // 2 % len(styles)], lw=1.2, label=name)  # fmt: skip
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
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


def _table_models(report: Mapping[str, Any], suite: str) -> dict[str, dict]:
    """Every model scored on `suite`, a repeated one as its mean over runs (labelled so)."""
    out = {}
    for label, value in report["scores"].items():
        runs = [value] if isinstance(value, Mapping) else value
        runs = [run[suite] for run in runs if suite in run]
        if len(runs) == 1 and not isinstance(value, Mapping):
            label = f"{label} (seed 0)"
        elif len(runs) > 1:
            label = f"{label} (mean of {len(runs)} seeds)"
        if runs:
            out[label] = run_mean(runs) if len(runs) > 1 else runs[0]
    return out


def _seed_section(report: Mapping[str, Any]) -> list[str]:
    rows = report["seed_table"]
    runs = len(rows[0]["CAM"]["runs"])
    out = ["## CAM vs no-CAM over training seeds", "",
           f"Each arm trained {runs} times (seeds {report['seeds']['training']}: batch order and "
           "dropout; the catalog, split and test items fixed); the interval combines the spread "
           "over seeds with the item bootstrap.", "",
           "| metric | " + " | ".join(f"seed {i}: CAM / no-CAM" for i in range(runs))
           + " | mean difference (std over seeds) | 95% CI | shown |",
           "|---" * (runs + 4) + "|"]  # fmt: skip
    for row in rows:
        cells = " | ".join(
            f"{a:.4f} / {b:.4f}"
            for a, b in zip(row["CAM"]["runs"], row["no-CAM"]["runs"], strict=True)
        )
        c, d = row["comparison"], row["difference"]
        out.append(
            f"| {row['metric']} | {cells} | {d['mean']:+.4f} ({d['std']:.4f}) | "
            f"[{c['low']:+.4f}, {c['high']:+.4f}] | {_VERDICT[c['verdict']]} |"
        )
    return [*out, ""]


def _general_section(report: Mapping[str, Any]) -> list[str]:
    info = report["general_suite"]
    sources = ", ".join(f"{s['package']} {s['version']} ({s['licence']})" for s in info["sources"])
    pairs = ", ".join(f"{lang} {n:,}" for lang, n in info["pairs"].items())
    models = _table_models(report, "general")
    return ["## General suite (forgetting check)", "",
            f"`{info['name']}`: human translations shipped in installed packages ({sources}); "
            f"per language, bitext mining and en retrieval over sampled pairs ({pairs}) with "
            f"{info['distractors']:,} distractors. STS: {info['sts']}.", "",
            summary_table(models), family_tables(models)]  # fmt: skip


def _sweep_section(report: Mapping[str, Any]) -> list[str]:
    sweep = report["sweep"]
    out = ["## Merge sweep (SLERP of the base and CAM seed 0)", "", sweep["objective"], "",
           "| t | domain | general | keeps the general threshold |",
           "|---|---|---|---|"]  # fmt: skip
    for row in sweep["rows"]:
        best = " **chosen**" if row["t"] == sweep["best_t"] else ""
        feasible = "yes" if row["feasible"] else "no"
        out.append(f"| {row['t']:g}{best} | {row['domain']:.4f} | {row['general']:.4f} | "
                   f"{feasible} |")  # fmt: skip
    return [*out, ""]


def _fp8_sections(report: Mapping[str, Any]) -> list[str]:
    """FP8 export minus bf16 export, per suite, family and language, with intervals."""
    out = ["## FP8 export vs bf16 export: score differences with 95% intervals", "",
           "Paired bootstrap over each task's items; one interval per row, not adjusted for the "
           "number of rows (about 1 in 20 rows may show a difference by chance).", ""]  # fmt: skip
    labels = ("FP8 export", "bf16 export")
    for suite, diffs in report["fp8_vs_bf16"].items():
        out += [f"### {suite}", "", difference_tables(diffs, labels, heading="####")]
    return [*out, "## FP8 export vs bf16 export (embedding cosine)", "",
            "| lang | texts | mean | min |", "|---|---|---|---|",
            *[f"| {lang} | {s['n']} | {s['mean']:.5f} | {s['min']:.5f} |"
              for lang, s in report["fp8_cosine"]["per_language"].items()], ""]  # fmt: skip


def markdown(report: Mapping[str, Any], density: Mapping[str, Any] | None = None) -> str:
    """The report as Markdown; `density` (the CAM-density experiment's result) adds its table."""
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in report["stage_seconds"].items())
    models = _table_models(report, "domain")
    figures = [name for name, path in FIGURES.items() if path in report["figures"]]
    lines = [
        f"# compass-jax demo ({report['size']})", "",
        f"{report['date']}; {report['machine_line']}; {report['seconds_total']:.0f} s in all "
        f"({stages}).", "",
        f"Base model `{report['model']}`; training: {report['training']}; merge: SLERP t = "
        f"{report['sweep']['best_t']} of {report['sweep']['ts']}.", "",
        "## Checks", "",
        "Each claim with a 95% interval from a paired bootstrap over the evaluation items "
        f"({CHECK_RESAMPLES} resamples, stratified by task), over items and training seeds where "
        'a model was trained several times; "yes" only when the interval excludes 0 on the '
        'claimed side, "no" when it excludes 0 on the other.', "",
        "| claim | shown | numbers |", "|---|---|---|",
        *[f"| {c['claim']} | {_VERDICT[c['verdict']]} | {c['numbers']} |"
          for c in report["checks"]], "",
        *(_seed_section(report) if report["seed_table"] else []),
        "## E-commerce test split (main scores)", "",
        "CAM and no-CAM: means over their training seeds.", "",
        summary_table(models), family_tables(models),
        *_general_section(report),
        *_sweep_section(report),
        *(density_markdown(density, heading="##") if density else []),
        *_fp8_sections(report),
        *masked_shares(report.get("histories", {})),
        "Figures: " + ", ".join(f"`{FIGURES[f]}` ({f})" for f in figures) + ".", "",
    ]  # fmt: skip
    return "\n".join(lines)


def write_report(out: str, report: dict[str, Any], density: dict | None = None) -> str:
    text = markdown(report, density)
    jsonio.write_json(os.path.join(out, "report.json"), report)
    with atomic_path(os.path.join(out, "report.md")) as tmp:
        pathlib.Path(tmp).write_text(text, encoding="utf-8")
    return text

"""The demo's report: the checks the run is judged by, the training curves and `report.md` /
`report.json` (every figure computed by the run)."""

from __future__ import annotations

import os
import pathlib
from typing import Any

import numpy as np

from compass_jax import jsonio
from compass_jax.atomic import atomic_path


def _mean_metric(results: dict, task_type: str, metric: str) -> float:
    values = [t["metrics"][metric] for t in results["tasks"].values() if t["type"] == task_type]
    return float(np.mean(values))


def checks(scores: dict[str, dict[str, dict]], fp8: dict, sweep: dict) -> list[dict]:
    """The claims the run is judged by, each with the numbers it rests on."""
    from compass_jax.eval.compare import family_means

    domain = {m: s["domain"]["average"] for m, s in scores.items()}
    general = {m: s["general"]["average"] for m, s in scores.items()}
    fam = {m: family_means(s["domain"]) for m, s in scores.items()}
    knn = {
        m: _mean_metric(s["domain"], "classification", "knn_accuracy") for m, s in scores.items()
    }
    gain = domain["CAM"] - domain["base"]
    kept = (domain["merged"] - domain["base"]) / gain if gain > 0 else float("nan")
    out = [
        ("trained (CAM) beats the base on the e-commerce test split",
         domain["CAM"] > domain["base"],
         f"domain average {domain['CAM']:.4f} vs {domain['base']:.4f}"),
        ("CAM beats no-CAM on classification",
         fam["CAM"]["category"] > fam["no-CAM"]["category"],
         f"accuracy {fam['CAM']['category']:.4f} vs {fam['no-CAM']['category']:.4f} (kNN "
         f"{knn['CAM']:.4f} vs {knn['no-CAM']:.4f})"),
        ("CAM beats no-CAM on clustering",
         fam["CAM"]["clustering"] > fam["no-CAM"]["clustering"],
         f"V-measure {fam['CAM']['clustering']:.4f} vs {fam['no-CAM']['clustering']:.4f}"),
        ("merged keeps >= 98% of the base's general score",
         general["merged"] >= 0.98 * general["base"],
         f"{general['merged']:.4f} = {general['merged'] / general['base']:.1%} of "
         f"{general['base']:.4f} (t = {sweep['best_t']})"),
        ("merged keeps most (> 50%) of the domain gain",
         kept > 0.5,
         f"{kept:.0%} of the gain ({domain['merged']:.4f} vs base {domain['base']:.4f}, "
         f"CAM {domain['CAM']:.4f})"),
        ("FP8 export embeddings: mean cosine >= 0.99 to bf16",
         fp8["all"]["mean"] >= 0.99,
         f"mean {fp8['all']['mean']:.5f}, min {fp8['all']['min']:.5f} over {fp8['all']['n']} "
         "texts"),
    ]  # fmt: skip
    return [{"claim": c, "holds": bool(ok), "numbers": n} for c, ok, n in out]


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
        "| claim | holds | numbers |",
        "|---|---|---|",
        *[
            f"| {c['claim']} | {'yes' if c['holds'] else '**no**'} | {c['numbers']} |"
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

"""The FP8 quality report as files: `fp8_report.json` and its Markdown tables (also a section of
the model card). Plain formatting and I/O: the report itself is computed by
`compass_jax.fp8_quality.quality_report` and handed to `save_hf`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from compass_jax import jsonio
from compass_jax.atomic import atomic_open

REPORT_JSON, REPORT_MD = "fp8_report.json", "fp8_report.md"


def markdown(report: Mapping[str, Any], heading: str = "#") -> str:
    """The human-readable tables of the report, under a `heading`-level title."""
    lines = [
        f"{heading} FP8 quality vs {report['compute_dtype']}",
        "",
        f"Simulated: {report['simulation']}; {report['n_records']} calibration records "
        f"(gate: mean cosine >= {report.get('min_cosine')} per language).",
        "",
        "| language | texts | mean cosine | p1 cosine | min cosine | top-1 ref | top-1 fp8 |",
        "|---|---|---|---|---|---|---|",
    ]
    cos = report["cosine"]
    for lang, s in [*cos["per_language"].items(), ("**all**", cos["all"])]:
        r = report["retrieval_top1"].get(lang)
        top = [f"{r['reference']:.3f}", f"{r['fp8']:.3f}"] if r else ["", ""]
        lines.append(
            f"| {lang} | {s['n']} | {s['mean']:.5f} | {s['p1']:.5f} | {s['min']:.5f} | "
            + " | ".join(top)
            + " |"
        )
    w = report["weights"]
    table = w["relative_frobenius_error"]
    names = list(dict.fromkeys(n for row in table.values() for n in row))
    lines += [
        "",
        f"Weight quantisation error (relative Frobenius): mean {w['mean']:.4f}, "
        f"max {w['max']:.4f} ({w['worst']})",
        "",
        "| layer | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for layer in sorted(table, key=int):
        lines.append(
            f"| {layer} | "
            + " | ".join(f"{table[layer].get(n, float('nan')):.4f}" for n in names)
            + " |"
        )
    if "eval" in report:
        lines += ["", "| metric | reference | fp8 | delta |", "|---|---|---|---|"]
        for metric, delta in report["eval"]["delta"].items():
            ref, q = report["eval"]["reference"][metric], report["eval"]["fp8"][metric]
            lines.append(f"| {metric} | {ref:.4f} | {q:.4f} | {delta:+.4f} |")
    return "\n".join(lines) + "\n"


def write_report(report: Mapping[str, Any], out_dir: str | os.PathLike) -> None:
    """`fp8_report.json` (strict JSON) and `fp8_report.md` in `out_dir`, each written atomically."""
    jsonio.write_json(os.path.join(out_dir, REPORT_JSON), report, indent=2)
    with atomic_open(os.path.join(out_dir, REPORT_MD), "w", encoding="utf-8") as f:
        f.write(markdown(report))

"""Several models' results on one suite, side by side: one table per task family (rows:
languages, columns: models) and a summary (rows: models, columns: family means and the suite's
weighted average). Families are task names without their language: `search-id` -> `search`,
`general-bitext-th-en` -> `general-bitext`."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

Results = Mapping[str, dict]  # model label -> `evaluate(...)` results on the same suite


def run_mean(runs: Sequence[dict]) -> dict:
    """Results of several training runs on one suite (the same tasks) as one result whose main
    scores and average are the means over the runs: what the tables show of a repeated model."""
    first = runs[0]
    if any(set(r["tasks"]) != set(first["tasks"]) for r in runs):
        raise ValueError(f"suite {first['suite']!r}: the runs were evaluated on different tasks")
    mean = lambda values: float(np.mean(values))
    tasks = {
        name: {**{k: t[k] for k in ("type", "lang", "weight")},
               "main": mean([r["tasks"][name]["main"] for r in runs])}
        for name, t in first["tasks"].items()
    }  # fmt: skip
    return {"suite": first["suite"], "model": f"mean of {len(runs)} runs", "tasks": tasks,
            "average": mean([r["average"] for r in runs])}  # fmt: skip


def family(name: str, lang: str) -> str:
    if lang and f"-{lang}" in name:
        return name[: name.index(f"-{lang}")]
    return name


def family_scores(results: dict) -> dict[str, dict[str, float]]:
    """`{family: {lang: main score}}` (a family's tasks in one language averaged)."""
    grouped: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for name, task in results["tasks"].items():
        grouped[family(name, task["lang"])][task["lang"] or "-"].append(task["main"])
    return {f: {lang: float(np.mean(v)) for lang, v in sorted(by.items())}
            for f, by in grouped.items()}  # fmt: skip


def family_means(results: dict) -> dict[str, float]:
    return {f: float(np.mean(list(by.values()))) for f, by in family_scores(results).items()}


def _best(values: list[float | None]) -> float | None:
    """The row's best value, or None where every model scores the same (nothing to mark)."""
    present = [v for v in values if v is not None]
    return max(present) if present and not np.allclose(present, present[0]) else None


def _cell(value: float | None, best: float | None) -> str:
    if value is None:
        return ""
    text = f"{value:.4f}"
    return f"**{text}**" if best is not None and np.isclose(value, best) else text


def family_tables(by_model: Results, *, heading: str = "###") -> str:
    """One Markdown table per family; the best model of each row in bold."""
    models = list(by_model)
    scores = {m: family_scores(r) for m, r in by_model.items()}
    families = list(dict.fromkeys(f for s in scores.values() for f in s))
    first = next(iter(by_model.values()))
    out = []
    for fam in families:
        types = {t["type"] for n, t in first["tasks"].items() if family(n, t["lang"]) == fam}
        langs = list(dict.fromkeys(lang for s in scores.values() for lang in s.get(fam, {})))
        header = "| lang | " + " | ".join(models) + " |"
        out += [f"{heading} {fam} ({', '.join(sorted(types))})", "", header,
                "|---" * (len(models) + 1) + "|"]  # fmt: skip
        rows = [(lang, [scores[m].get(fam, {}).get(lang) for m in models]) for lang in langs]
        means = [float(np.mean([v for _, vs in rows if (v := vs[i]) is not None]))
                 for i in range(len(models))]  # fmt: skip
        for lang, values in [*rows, ("mean", means)]:
            cells = " | ".join(_cell(v, _best(values)) for v in values)
            lang = f"**{lang}**" if lang == "mean" else lang
            out.append(f"| {lang} | {cells} |")
        out.append("")
    return "\n".join(out)


def summary_table(by_model: Results) -> str:
    """Rows: models; columns: each family's mean over languages, then the weighted average."""
    means = {m: family_means(r) for m, r in by_model.items()}
    families = list(dict.fromkeys(f for s in means.values() for f in s))
    lines = ["| model | " + " | ".join(families) + " | average |",
             "|---" * (len(families) + 2) + "|"]  # fmt: skip
    columns = {f: [means[m].get(f) for m in by_model] for f in families}
    columns["average"] = [r["average"] for r in by_model.values()]
    best = {c: _best(vs) for c, vs in columns.items()}
    for i, model in enumerate(by_model):
        cells = " | ".join(_cell(columns[c][i], best[c]) for c in [*families, "average"])
        lines.append(f"| {model} | {cells} |")
    return "\n".join(lines) + "\n"

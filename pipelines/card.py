"""The dataset card: counts per task, split, language, source and label, as JSON (for tools)
and Markdown (for people). Counts are plain nested dicts of integers that add up
(`units.merge_reports`), so a runner may count its records in any order and in any number of
pieces; the card is written with sorted keys, so equal counts give equal bytes."""

from __future__ import annotations

from compass_jax import jsonio
from compass_jax.atomic import atomic_open
from pipelines.tasks import TASKS
from pipelines.tfds_io import sort_keys


def count(counts: dict, r: dict) -> dict:
    """Add one output record to `counts` (in place; returned for folding)."""
    c = counts.setdefault(r["task"], {"records": 0, "with_negatives": 0})
    c["records"] += 1
    c["with_negatives"] += bool(r["negatives"])
    for field, key in (
        ("splits", r["split"]),
        ("langs", r["lang"]),
        ("sources", r["source"].split(":")[0]),
    ):
        c.setdefault(field, {})
        c[field][key] = c[field].get(key, 0) + 1
    if r["label"] >= 0:
        c.setdefault("labels", {})
        c["labels"][str(r["label"])] = c["labels"].get(str(r["label"]), 0) + 1
    return counts


def markdown(card: dict, labels: dict) -> str:
    lines = [
        "# compass-jax training data",
        "",
        f"Built from {card['catalog']}; seed {card['seed']}, {card['partitions']} "
        f"partitions, splits held out by `group_id`.",
        "",
        "| task | records | train | validation | test | with negatives | labels |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for task, c in card["tasks"].items():
        s = c["splits"]
        lines.append(
            f"| {task} | {c['records']} | {s.get('train', 0)} | "
            f"{s.get('validation', 0)} | {s.get('test', 0)} | {c['with_negatives']} | "
            f"{len(c.get('labels', {})) or '-'} |"
        )
    lines += ["", "## Records per language", ""]
    for task, c in card["tasks"].items():
        langs = ", ".join(f"{k} {v}" for k, v in c["langs"].items())
        lines.append(f"- **{task}** ({TASKS[task].instruction}): {langs}")
    lines += ["", "## Sources", ""]
    for task, c in card["tasks"].items():
        lines.append(f"- {task}: " + ", ".join(f"{k} {v}" for k, v in c["sources"].items()))
    lines += ["", "## Dropped (reasons in rejects/)", ""]
    for stage, reasons in card["dropped"].items():
        lines.append(f"- {stage}: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())))
    leaf = labels["levels"][-1] if labels["levels"] else []
    lines += ["", f"## Labels ({len(leaf)} leaf classes; ids in labels.json)", ""]
    for task, c in card["tasks"].items():
        if c.get("labels"):
            top = sorted(c["labels"].items(), key=lambda kv: (-kv[1], kv[0]))[:10]
            names = ", ".join(f"{leaf[int(k)]} ({v})" for k, v in top)
            lines.append(f"- {task}, most frequent: {names}")
    return "\n".join(lines) + "\n"


def write_card(root: str, cfg, labels: dict, reports: dict, counts: dict) -> dict:
    catalog = cfg.catalog.paths or [
        f"the bundled catalog ({cfg.catalog.generate_size} product groups)"
    ]
    # Only counts go into the card (no timings, no cache hits): equal builds give equal cards.
    dropped = {stage: r["dropped"] for stage, r in reports.items() if r.get("dropped")}
    card = sort_keys(
        {
            "catalog": ", ".join(catalog),
            "seed": cfg.seed,
            "partitions": cfg.partitions,
            "tasks": counts,
            "dropped": dropped,
        }
    )
    jsonio.write_json(f"{root}/card.json", card)
    with atomic_open(f"{root}/card.md", "w", encoding="utf-8") as f:
        f.write(markdown(card, labels))
    return card

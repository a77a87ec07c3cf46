"""The dataset card: counts per task, split, language, source and label, as JSON (for tools)
and Markdown (for people), plus the label map and the tasks index the reader opens."""

from __future__ import annotations

from collections import Counter

from pipelines.tasks import TASKS
from pipelines.workspace import Workspace, dump_json, load_jsonl


def collect(ws: Workspace) -> dict:
    counts: dict[str, dict] = {}
    for unit in ws.partition_units():
        for r in load_jsonl(ws.work("mine", f"{unit}.jsonl")):
            c = counts.setdefault(
                r["task"],
                {
                    "records": 0,
                    "splits": Counter(),
                    "langs": Counter(),
                    "sources": Counter(),
                    "labels": Counter(),
                    "with_negatives": 0,
                },
            )
            c["records"] += 1
            c["splits"][r["split"]] += 1
            c["langs"][r["lang"]] += 1
            c["sources"][r["source"].split(":")[0]] += 1
            if r["label"] >= 0:
                c["labels"][str(r["label"])] += 1
            c["with_negatives"] += bool(r["negatives"])
    return {
        task: {k: dict(sorted(v.items())) if isinstance(v, Counter) else v for k, v in c.items()}
        for task, c in sorted(counts.items())
    }


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
            f"{len(c['labels']) or '-'} |"
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
        if c["labels"]:
            top = sorted(c["labels"].items(), key=lambda kv: -kv[1])[:10]
            names = ", ".join(f"{leaf[int(k)]} ({v})" for k, v in top)
            lines.append(f"- {task}, most frequent: {names}")
    return "\n".join(lines) + "\n"


def write_card(ws: Workspace, labels: dict, reports: dict) -> dict:
    catalog = ws.cfg.catalog.paths or [
        f"the bundled catalog ({ws.cfg.catalog.generate_size} product groups)"
    ]
    # Only counts go into the card (no timings, no cache hits): equal builds give equal cards.
    dropped = {stage: r["dropped"] for stage, r in reports.items() if r.get("dropped")}
    card = {
        "catalog": ", ".join(catalog),
        "seed": ws.cfg.seed,
        "partitions": ws.cfg.partitions,
        "tasks": collect(ws),
        "dropped": dropped,
    }
    dump_json(ws.path("card.json"), card)
    from compass_jax.atomic import atomic_path

    with atomic_path(ws.path("card.md")) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(markdown(card, labels))
    return card

"""The build's last step, shared by both runners: the label map, each task's TFDS metadata (from
the per-shard record counts), the tasks index the readers open, the dataset card and the build
report."""

from __future__ import annotations

from compass_jax import jsonio
from pipelines import card, tfds_io
from pipelines.tasks import TASKS
from pipelines.tasks.labels import LabelMap


def task_description(task: str) -> str:
    return f"compass-jax {task}: {TASKS[task].instruction}."


def finalize(ws, labels: LabelMap, lengths: dict, counts: dict, reports: dict) -> dict:
    """`lengths`: {task: {split: [records per partition shard]}}; `counts`: the card's counts
    (`card.count`) over every output record; `reports`: {stage: merged report}."""
    cfg = ws.cfg
    jsonio.write_json(ws.path("labels.json"), labels.to_json())
    spec = tfds_io.features()
    index = {}
    for task, splits in sorted(lengths.items()):
        path = tfds_io.write_metadata(
            ws.tfds_root, task, cfg.version, task_description(task), splits, spec
        )
        index[task] = {
            "path": path[len(ws.root) + 1 :],
            "instruction": TASKS[task].instruction,
            "labelled": TASKS[task].labelled,
            "records": {s: sum(n) for s, n in sorted(splits.items())},
        }
    jsonio.write_json(ws.path("datasets.json"), {"version": cfg.version, "tasks": index})
    jsonio.write_json(ws.path("report.json"), tfds_io.sort_keys(reports))
    written = card.write_card(ws.root, cfg, labels.to_json(), reports, counts)
    return {"tasks": {t: c["records"] for t, c in written["tasks"].items()}}

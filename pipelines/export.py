"""Export a build's split as the JSONL training records the trainer reads today:
`{query, positive, negatives, negative_labels, label, task, lang}`, one per line, tasks in name
order and each task in dataset order (so `PairReader` over the file sees the records
`MixtureReader` sees)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from compass_jax.atomic import atomic_path
from compass_jax.data.tfds_source import open_build


def export_jsonl(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    split: str = "train",
    tasks: Sequence[str] | None = None,
) -> dict[str, int]:
    sources = open_build(root, split, tasks)
    counts = {}
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for task, source in sorted(sources.items()):
            for i in range(len(source)):
                f.write(json.dumps(source[i].to_json(), ensure_ascii=False) + "\n")
            counts[task] = len(source)
    return counts

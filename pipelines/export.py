"""Export a build's split as the JSONL training records the trainer reads today:
`{query, positive, negatives, negative_labels, label, task, lang}`, one per line, tasks in name
order and each task in dataset order (so `PairReader` over the file sees the records
`MixtureReader` sees)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from compass_jax import jsonio
from compass_jax.data.tfds_source import open_build


def export_jsonl(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    split: str = "train",
    tasks: Sequence[str] | None = None,
) -> dict[str, int]:
    sources = sorted(open_build(root, split, tasks).items())
    jsonio.write_jsonl(out, (record.to_json() for _, source in sources for record in source))
    return {task: len(source) for task, source in sources}

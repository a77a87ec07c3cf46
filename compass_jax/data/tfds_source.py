"""Random-access views of the pipelines' TFDS datasets as `PairRecord`s, without TensorFlow.

`tfds.builder_from_directory(dir).as_data_source(split)` reads ArrayRecord shards with random
access; records are decoded only when a batch asks for them. A build directory's
`datasets.json` names one dataset per task.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from compass_jax import jsonio
from compass_jax.data.pairs import PairRecord


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class TaskSource(Sequence):
    """One task's split: `len()` records, `source[i]` -> PairRecord."""

    def __init__(self, path: str | os.PathLike, split: str):
        try:
            import tensorflow_datasets as tfds
        except ImportError:
            raise ImportError(
                "reading TFDS datasets needs tensorflow-datasets: pip install 'compass-jax[data]'"
            ) from None
        self.path, self.split = os.fspath(path), split
        if not os.path.isfile(os.path.join(self.path, "dataset_info.json")):
            raise FileNotFoundError(f"{self.path}: not a TFDS dataset (no dataset_info.json)")
        builder = tfds.builder_from_directory(self.path)
        if split not in builder.info.splits:
            raise ValueError(f"{self.path}: no split {split!r} (has {list(builder.info.splits)})")
        # An empty split has no shard files to open: array_record refuses a 0-length list.
        empty = builder.info.splits[split].num_examples == 0
        self._source = [] if empty else builder.as_data_source(split=split)

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = int(index) + (len(self) if int(index) < 0 else 0)
        if not 0 <= index < len(self):  # Sequence iteration stops at IndexError
            raise IndexError(f"{self.path} [{self.split}]: index out of range")
        return self._record(self._source[index])

    def get_many(self, indices: Sequence[int]) -> list[PairRecord]:
        """Several records in one call: ArrayRecord reads them together (faster than one by one)."""
        if any(not 0 <= int(i) < len(self) for i in indices):
            raise IndexError(f"{self.path} [{self.split}]: index out of range")
        return [self._record(raw) for raw in self._source.__getitems__([int(i) for i in indices])]

    @staticmethod
    def _record(raw) -> PairRecord:
        # Builds before hard negatives carried their class have no `negative_labels`: all -1.
        labels = raw.get("negative_labels", ())
        return PairRecord(
            query=_text(raw["query"]),
            positive=_text(raw["positive"]),
            negatives=tuple(_text(n) for n in raw["negatives"]),
            label=int(raw["label"]),
            task=_text(raw["task"]),
            lang=_text(raw["lang"]),
            negative_labels=tuple(int(x) for x in labels),
        )


def read_index(root: str | os.PathLike) -> dict:
    path = os.path.join(os.fspath(root), "datasets.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: not a compass-jax data build (no datasets.json)")
    return jsonio.read_json(path)


def open_build(
    root: str | os.PathLike, split: str = "train", tasks: Sequence[str] | None = None
) -> dict[str, TaskSource]:
    """{task: TaskSource} for a build directory (all tasks with records in `split`)."""
    index = read_index(root)["tasks"]
    unknown = sorted(set(tasks or ()) - set(index))
    if unknown:
        raise ValueError(f"{root}: no tasks {unknown} (has {sorted(index)})")
    chosen = tasks or [t for t in sorted(index) if index[t]["records"].get(split)]
    return {t: TaskSource(os.path.join(os.fspath(root), index[t]["path"]), split) for t in chosen}

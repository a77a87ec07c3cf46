"""A deterministic, checkpointable reader over many task datasets: task-homogeneous global
batches, tasks mixed by weight, each process reading only its rows.

Each step yields `(task, list[PairRecord])` from random streams that depend only on (seed,
task, epoch, step): over the same records, a JSONL file (`PairReader`) and a TFDS build give
identical batches, so switching the trainer from JSONL to TFDS changes no result. TFDS records
are read by random access (ArrayRecord), one batch at a time, so datasets need not fit in
memory.
Its position is a small JSON dict (`state()` / `restore()`), saved with every checkpoint.

`class_density={task: share}` draws that task's batches as same-class groups whose mean
same-class share is `share` (`compass_jax.data.class_density`): the controlled variable of the
CAM experiment. Such a batch depends on (seed, task, batch index) alone, so it resumes exactly
from the same state.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from compass_jax.data.class_density import DensityBatches, labels_of
from compass_jax.data.pairs import PairRecord, read_records


class MixtureReader:
    def __init__(
        self,
        sources: Mapping[str, Sequence[PairRecord]],
        *,
        batch_size: int,
        seed: int = 0,
        task_weights: Mapping[str, float] | None = None,
        process_index: int = 0,
        process_count: int = 1,
        class_density: Mapping[str, float] | None = None,
    ):
        if batch_size % process_count:
            raise ValueError(f"batch_size {batch_size} not divisible by {process_count} processes")
        self.sources = {t: s for t, s in sources.items() if len(s)}
        if not self.sources:
            raise ValueError("no task has any records")
        self.tasks = sorted(self.sources)
        weights = dict(task_weights or {})
        unknown = sorted(set(weights) - set(self.tasks))
        if unknown:
            raise ValueError(f"task_weights name tasks absent from the data: {unknown}")
        w = np.array([weights.get(t, len(self.sources[t])) for t in self.tasks], np.float64)
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"task weights must be non-negative and not all zero: {weights}")
        self.weights = w / w.sum()
        self.batch_size, self.seed = batch_size, seed
        self.process_index, self.process_count = process_index, process_count
        self.step = 0
        self.cursors = {t: 0 for t in self.tasks}
        self._orders: dict[tuple[str, int], np.ndarray] = {}
        self.last_global_rows: list[PairRecord] = []
        self.class_density = dict(class_density or {})
        unknown = sorted(set(self.class_density) - set(self.tasks))
        if unknown:
            raise ValueError(f"class_density names tasks absent from the data: {unknown}")
        self._dense = {
            task: DensityBatches(task, labels_of(self.sources[task]), batch_size=batch_size,
                                 share=share, seed=(seed, self.tasks.index(task)))
            for task, share in sorted(self.class_density.items())
        }  # fmt: skip

    @property
    def fingerprint(self) -> dict[str, int]:
        return {t: len(self.sources[t]) for t in self.tasks}

    def state(self) -> dict:
        state = {"step": self.step, "cursors": dict(self.cursors), "sizes": self.fingerprint}
        return state | ({"class_density": self.class_density} if self.class_density else {})

    def restore(self, state: Mapping) -> None:
        sizes = state.get("sizes")
        if sizes is not None and dict(sizes) != self.fingerprint:
            raise ValueError(
                f"reader state was saved over other data (task sizes {dict(sizes)}, now "
                f"{self.fingerprint}): the batches after a restore would differ"
            )
        density = dict(state.get("class_density", {}))
        if density != self.class_density:
            raise ValueError(
                f"reader state was saved with class_density {density}, now "
                f"{self.class_density}: the batches after a restore would differ"
            )
        self.step = int(state["step"])
        self.cursors = {t: int(state["cursors"].get(t, 0)) for t in self.tasks}

    def _order(self, task: str, epoch: int) -> np.ndarray:
        # One permutation per (seed, task, epoch), whatever the storage.
        if (task, epoch) not in self._orders:
            if len(self._orders) > 8:
                self._orders.clear()
            rng = np.random.default_rng([self.seed, self.tasks.index(task), epoch])
            self._orders[task, epoch] = rng.permutation(len(self.sources[task]))
        return self._orders[task, epoch]

    def _indices(self, task: str, first: int, count: int) -> list[int]:
        """Record indices of rows `first .. first + count` of the task's stream."""
        if task in self._dense:
            batch, offset = divmod(first, self.batch_size)
            return self._dense[task].indices(batch)[offset : offset + count].tolist()
        indices = []
        for i in range(first, first + count):
            epoch, pos = divmod(i, len(self.sources[task]))
            indices.append(int(self._order(task, epoch)[pos]))
        return indices

    def _rows(self, task: str, first: int, count: int) -> list[PairRecord]:
        pool = self.sources[task]
        indices = self._indices(task, first, count)
        if hasattr(pool, "get_many"):  # a TFDS source reads a batch in one call
            return pool.get_many(indices)
        return [pool[i] for i in indices]

    def next_global_batch(self) -> tuple[str, list[PairRecord]]:
        """(task, every row of the next global batch): what all processes read together."""
        task, _ = self._advance(global_rows=True)
        return task, self.last_global_rows

    def next_batch(self) -> tuple[str, list[PairRecord]]:
        """(task, this process's rows of the next global batch), as PairReader.next_batch."""
        return self._advance(global_rows=False)

    def _advance(self, *, global_rows: bool) -> tuple[str, list[PairRecord]]:
        rng = np.random.default_rng([self.seed, 1_000_003, self.step])
        task = self.tasks[int(rng.choice(len(self.tasks), p=self.weights))]
        start = self.cursors[task] * self.batch_size
        per_process = self.batch_size // self.process_count
        if global_rows:
            self.last_global_rows = self._rows(task, start, self.batch_size)
            rows = self.last_global_rows[
                self.process_index * per_process : (self.process_index + 1) * per_process
            ]
        else:
            rows = self._rows(task, start + self.process_index * per_process, per_process)
        self.cursors[task] += 1
        self.step += 1
        return task, rows


class PairReader(MixtureReader):
    """A `MixtureReader` over in-memory records (a JSONL file), grouped by task."""

    def __init__(self, records: Sequence[PairRecord], **kwargs):
        by_task: dict[str, list[PairRecord]] = {}
        for r in records:
            by_task.setdefault(r.task, []).append(r)
        super().__init__(by_task, **kwargs)


def open_reader(path: str | os.PathLike, *, split: str = "train", tasks=None, **kwargs):
    """A reader for a JSONL file (PairReader) or a pipelines build directory (MixtureReader).

    kwargs are the readers' common arguments: batch_size, seed, task_weights,
    process_index, process_count, class_density.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        from compass_jax.data.tfds_source import open_build

        return MixtureReader(open_build(path, split, tasks), **kwargs)
    return PairReader(read_records(path), **kwargs)

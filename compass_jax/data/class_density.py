"""Batches with a chosen share of same-class rows: the controlled variable of the CAM experiment.

For an anchor in a batch of `B` rows, its *same-class share* is the fraction of the other `B - 1`
rows whose class (`PairRecord.label`) is the anchor's: the share of its in-batch candidates that
CAM's class mask removes and plain InfoNCE treats as negatives. A batch made of same-class groups
of sizes `n_1 .. n_m` (each group a different class) has the mean share

    share = sum_i n_i (n_i - 1) / (B (B - 1))

`group_sizes` picks sizes whose share is the closest to a target: equal groups of
`1 + share (B - 1)` rows where that divides the batch (every anchor then sees exactly the
target), else the closest even split adjusted by single rows, so anchors see shares around the
target and their mean is the target; `DensityBatches` draws a batch of such groups for a task.

A batch is a function of `(seed, task, batch index)` alone: deterministic, and resumed exactly
from the reader's cursor with no extra state. Classes are drawn with probability proportional to
their size (among those with enough records), records within a class without replacement, and
the batch is shuffled. Unlike the reader's natural order, draws are independent between batches,
so a record may recur before every record has been seen.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from compass_jax.data.pairs import PairRecord

_STREAM = 2_000_003  # keeps these draws apart from the reader's other random streams


def batch_share(labels: Sequence[int]) -> float:
    """The mean over a batch's rows of the share of the other rows of the same class."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    b = int(counts.sum())
    return float((counts * (counts - 1)).sum() / (b * (b - 1))) if b > 1 else 0.0


def group_sizes(batch: int, share: float, max_groups: int) -> list[int]:
    """Sizes (largest first) of at most `max_groups` same-class groups that fill a batch of
    `batch` rows and whose `batch_share` is the closest to `share`: the closest even split,
    then the gentlest single-row moves toward the target."""
    if not 0 <= share <= 1:
        raise ValueError(f"a same-class share is in [0, 1], got {share}")
    target = share * batch * (batch - 1)  # sum n (n - 1) over the groups
    total = lambda sizes: sum(n * (n - 1) for n in sizes)
    even = lambda m: [batch // m + (i < batch % m) for i in range(m)]
    top = max(min(max_groups, batch), 1)
    sizes = min((even(m) for m in range(1, top + 1)), key=lambda s: abs(total(s) - target))
    current = total(sizes)
    while True:
        # A row from a group of `a` to one of `b` changes the total by 2 (b - a + 1); to a new
        # group (while fewer than `top`), by -2 (a - 1).
        values = sorted(set(sizes))
        moves = [(2 * (b - a + 1), a, b) for a in values for b in values
                 if a != b or sizes.count(a) > 1]  # fmt: skip
        if len(sizes) < top:
            moves += [(-2 * (a - 1), a, 0) for a in values if a > 1]
        better = [m for m in moves if abs(current + m[0] - target) < abs(current - target)]
        if not better:
            return sorted(sizes, reverse=True)
        change, a, b = min(better, key=lambda m: abs(m[0]))
        sizes.remove(a)
        sizes += [n for n in (a - 1,) if n]
        if b:
            sizes.remove(b)
        sizes.append(b + 1)
        current += change


class DensityBatches:
    """Batch compositions of one task at a target same-class share (see the module docstring).

    `labels` are the task's records' classes (all >= 0); `indices(batch_index)` gives the
    record indices of that batch."""

    def __init__(
        self, task: str, labels: Sequence[int], *, batch_size: int, share: float, seed: tuple
    ):
        labels = np.asarray(labels)
        if labels.size and labels.min() < 0:
            raise ValueError(
                f"class_density: task {task!r} has records without a class (label -1); "
                "only class-labelled tasks can be drawn at a class density"
            )
        self.task, self.batch_size, self.share, self.seed = task, batch_size, share, seed
        self.classes, inverse = np.unique(labels, return_inverse=True)
        self.members = [np.flatnonzero(inverse == c) for c in range(len(self.classes))]
        self.sizes = group_sizes(batch_size, share, len(self.classes))
        counts = np.array([len(m) for m in self.members])
        need = sorted(self.sizes, reverse=True)
        have = np.sort(counts)[::-1][: len(need)]
        if len(need) > len(counts) or (have < need).any():
            raise ValueError(
                f"class_density: task {task!r} cannot make batches of {batch_size} at a "
                f"same-class share of {share:g}: that needs groups of {need} rows from distinct "
                f"classes, and its {len(counts)} classes have "
                f"{sorted(map(int, counts), reverse=True)[:8]} records (the largest)"
            )
        self.counts = counts
        self.achieved = batch_share(np.repeat(np.arange(len(self.sizes)), self.sizes))
        if abs(self.achieved - share) > 1 / (batch_size - 1):
            raise ValueError(
                f"class_density: task {task!r} cannot make batches of {batch_size} at a "
                f"same-class share of {share:g} with its {len(counts)} classes: the closest is "
                f"{self.achieved:.3f}"
            )

    def indices(self, batch_index: int) -> np.ndarray:
        rng = np.random.default_rng([*self.seed, _STREAM, batch_index])
        free = np.ones(len(self.classes), bool)
        rows = []
        for n in self.sizes:  # largest first, so the big groups find a class big enough
            eligible = free & (self.counts >= n)
            p = np.where(eligible, self.counts, 0).astype(np.float64)
            c = int(rng.choice(len(p), p=p / p.sum()))
            free[c] = False
            rows.append(rng.choice(self.members[c], n, replace=False))
        return rng.permutation(np.concatenate(rows))


def labels_of(pool: Sequence[PairRecord], chunk: int = 4096) -> np.ndarray:
    """Every record's class, read in chunks (one call each for a TFDS source)."""
    out = []
    for start in range(0, len(pool), chunk):
        stop = min(start + chunk, len(pool))
        rows = pool.get_many(range(start, stop)) if hasattr(pool, "get_many") else pool[start:stop]
        out.extend(r.label for r in rows)
    return np.asarray(out, np.int64)

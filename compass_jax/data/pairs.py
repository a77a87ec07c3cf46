"""Contrastive training records from JSONL, served as deterministic task-homogeneous batches.

Record: `{"query", "positive", "negatives": [...], "label": int | -1, "task", "lang"}`.
Every batch holds one task (so per-task loss settings apply); tasks are drawn by weight. The
reader's whole position is a small JSON dict (step and per-task cursors), saved with every
checkpoint, so a restored run sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence

import numpy as np

from compass_jax.data.text_hash import text_hash


class RecordError(ValueError):
    """A malformed training record; the message names the file and line."""


@dataclasses.dataclass(frozen=True)
class PairRecord:
    query: str
    positive: str
    negatives: tuple[str, ...] = ()
    label: int = -1
    task: str = "default"
    lang: str = ""


def _record(path: str, number: int, line: str) -> PairRecord:
    where = f"{path}:{number}"
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as e:
        raise RecordError(f"{where}: invalid JSON ({e.msg})") from None
    if not isinstance(raw, dict):
        raise RecordError(f"{where}: expected a JSON object")
    for field in ("query", "positive"):
        if not isinstance(raw.get(field), str) or not raw[field].strip():
            raise RecordError(f"{where}: field {field!r} must be a non-empty string")
    negatives = raw.get("negatives") or []
    if not isinstance(negatives, list) or not all(isinstance(n, str) and n for n in negatives):
        raise RecordError(f"{where}: field 'negatives' must be a list of non-empty strings")
    label = raw.get("label", -1)
    label = -1 if label is None else label
    if not isinstance(label, int) or isinstance(label, bool) or label < -1:
        raise RecordError(
            f"{where}: field 'label' must be an integer >= -1 (or null), got {label!r}"
        )
    task = raw.get("task", "default")
    if not isinstance(task, str) or not task:
        raise RecordError(f"{where}: field 'task' must be a non-empty string")
    return PairRecord(
        raw["query"], raw["positive"], tuple(negatives), label, task, str(raw.get("lang", ""))
    )


def read_records(path: str | os.PathLike) -> list[PairRecord]:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such training data file")
    records = []
    with open(path, encoding="utf-8", errors="strict") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                records.append(_record(path, number, line))
    if not records:
        raise RecordError(f"{path}: no records")
    return records


class PairReader:
    """Deterministic task-homogeneous global batches; each process takes its slice of rows."""

    def __init__(
        self,
        records: Sequence[PairRecord],
        *,
        batch_size: int,
        seed: int = 0,
        task_weights: Mapping[str, float] | None = None,
        process_index: int = 0,
        process_count: int = 1,
    ):
        if batch_size % process_count:
            raise ValueError(f"batch_size {batch_size} not divisible by {process_count} processes")
        self.by_task: dict[str, list[PairRecord]] = {}
        for r in records:
            self.by_task.setdefault(r.task, []).append(r)
        self.tasks = sorted(self.by_task)
        weights = dict(task_weights or {})
        unknown = sorted(set(weights) - set(self.tasks))
        if unknown:
            raise ValueError(f"task_weights name tasks absent from the data: {unknown}")
        w = np.array([weights.get(t, len(self.by_task[t])) for t in self.tasks], np.float64)
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"task weights must be non-negative and not all zero: {weights}")
        self.weights = w / w.sum()
        self.batch_size, self.seed = batch_size, seed
        self.process_index, self.process_count = process_index, process_count
        self.step = 0
        self.cursors = {t: 0 for t in self.tasks}
        self._orders: dict[tuple[str, int], np.ndarray] = {}

    def state(self) -> dict:
        return {"step": self.step, "cursors": dict(self.cursors)}

    def restore(self, state: Mapping) -> None:
        self.step = int(state["step"])
        self.cursors = {t: int(state["cursors"].get(t, 0)) for t in self.tasks}

    def _order(self, task: str, epoch: int) -> np.ndarray:
        """The shuffle of `task`'s records in `epoch`, a pure function of (seed, task, epoch)."""
        if (task, epoch) not in self._orders:
            if len(self._orders) > 8:
                self._orders.clear()
            rng = np.random.default_rng([self.seed, self.tasks.index(task), epoch])
            self._orders[task, epoch] = rng.permutation(len(self.by_task[task]))
        return self._orders[task, epoch]

    def next_batch(self) -> tuple[str, list[PairRecord]]:
        """(task, this process's records of the next global batch)."""
        rng = np.random.default_rng([self.seed, 1_000_003, self.step])
        task = self.tasks[int(rng.choice(len(self.tasks), p=self.weights))]
        pool = self.by_task[task]
        start = self.cursors[task] * self.batch_size
        per_process = self.batch_size // self.process_count
        first = start + self.process_index * per_process
        rows = []
        for i in range(first, first + per_process):
            epoch, pos = divmod(i, len(pool))
            rows.append(pool[self._order(task, epoch)[pos]])
        self.cursors[task] += 1
        self.step += 1
        return task, rows


def tokenize_batch(
    records: Sequence[PairRecord],
    tokenizer,
    *,
    query_prefix: str,
    document_prefix: str,
    query_length: int,
    document_length: int,
    num_negatives: int,
) -> dict[str, np.ndarray]:
    """Fixed-shape arrays for one (local) batch; missing negatives are padded and flagged."""
    b, h = len(records), num_negatives

    def encode(texts, length):
        enc = tokenizer(
            texts, truncation=True, max_length=length, padding="max_length", return_tensors="np"
        )
        return enc["input_ids"].astype(np.int32), enc["attention_mask"].astype(np.int32)

    negatives = [(r.negatives + ("",) * h)[:h] for r in records]
    valid = np.array([[bool(n) for n in row] for row in negatives], bool).reshape(b, h)
    flat_negs = [document_prefix + n if n else "" for row in negatives for n in row]
    q_ids, q_mask = encode([query_prefix + r.query for r in records], query_length)
    p_ids, p_mask = encode([document_prefix + r.positive for r in records], document_length)
    out = {
        "query_ids": q_ids,
        "query_mask": q_mask,
        "positive_ids": p_ids,
        "positive_mask": p_mask,
        "label": np.array([r.label for r in records], np.int32),
        "query_hash": np.array([text_hash(r.query) for r in records], np.int32),
        "positive_hash": np.array([text_hash(r.positive) for r in records], np.int32),
        "negative_valid": valid,
        "negative_label": np.full((b, h), -1, np.int32),
        "negative_hash": np.array(
            [[text_hash(n) for n in row] for row in negatives], np.int32
        ).reshape(b, h),
    }
    if h:
        n_ids, n_mask = encode(flat_negs, document_length)
        out["negative_ids"], out["negative_mask"] = n_ids, n_mask * valid.reshape(-1, 1)
    else:
        out["negative_ids"] = np.zeros((0, document_length), np.int32)
        out["negative_mask"] = np.zeros((0, document_length), np.int32)
    return out

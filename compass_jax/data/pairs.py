"""Contrastive training records from JSONL, served as deterministic task-homogeneous batches.

Record: `{"query", "positive", "negatives": [...], "label": int | -1, "task", "lang"}`.
Batches come from `compass_jax.data.mixture` (`PairReader` over these records).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

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

    def to_json(self) -> dict:
        """The JSONL record `read_records` reads back into an equal PairRecord."""
        return {"query": self.query, "positive": self.positive,
                "negatives": list(self.negatives), "label": self.label, "task": self.task,
                "lang": self.lang}  # fmt: skip


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

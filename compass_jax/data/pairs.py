"""Contrastive training records from JSONL, and their tokenisation into a `TrainBatch`.

Record: `{"query", "positive", "negatives": [...], "negative_labels": [...], "label": int | -1,
"task", "lang"}`. `negative_labels` gives each hard negative's class id (-1 unlabelled; absent:
all unlabelled), so CAM can also drop another example's hard negative of the anchor's class.
Batches come from `compass_jax.data.mixture` (`PairReader` over these records).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np

from compass_jax import jsonio
from compass_jax.data import packing
from compass_jax.data.batch import TOWERS, TrainBatch
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
    # One class id per negative; () stands for all -1 and is filled in.
    negative_labels: tuple[int, ...] = ()

    def __post_init__(self):
        if not self.negative_labels:
            object.__setattr__(self, "negative_labels", (-1,) * len(self.negatives))
        elif len(self.negative_labels) != len(self.negatives):
            raise ValueError(
                f"{len(self.negative_labels)} negative_labels for {len(self.negatives)} negatives"
            )

    def to_json(self) -> dict:
        """The JSONL record `read_records` reads back into an equal PairRecord."""
        return {"query": self.query, "positive": self.positive,
                "negatives": list(self.negatives), "negative_labels": list(self.negative_labels),
                "label": self.label, "task": self.task, "lang": self.lang}  # fmt: skip


def _is_label(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= -1


def _record(where: str, raw: dict) -> PairRecord:
    for field in ("query", "positive"):
        if not isinstance(raw.get(field), str) or not raw[field].strip():
            raise RecordError(f"{where}: field {field!r} must be a non-empty string")
    negatives = raw.get("negatives") or []
    if not isinstance(negatives, list) or not all(isinstance(n, str) and n for n in negatives):
        raise RecordError(f"{where}: field 'negatives' must be a list of non-empty strings")
    labels = raw.get("negative_labels")
    labels = [-1] * len(negatives) if labels is None else labels
    if not isinstance(labels, list) or not all(_is_label(x) for x in labels):
        raise RecordError(f"{where}: field 'negative_labels' must be a list of integers >= -1")
    if len(labels) != len(negatives):
        raise RecordError(
            f"{where}: field 'negative_labels' has {len(labels)} entries for "
            f"{len(negatives)} negatives"
        )
    label = raw.get("label", -1)
    label = -1 if label is None else label
    if not _is_label(label):
        raise RecordError(
            f"{where}: field 'label' must be an integer >= -1 (or null), got {label!r}"
        )
    task = raw.get("task", "default")
    if not isinstance(task, str) or not task:
        raise RecordError(f"{where}: field 'task' must be a non-empty string")
    return PairRecord(raw["query"], raw["positive"], tuple(negatives), label, task,
                      str(raw.get("lang", "")), tuple(labels))  # fmt: skip


def read_records(path: str | os.PathLike) -> list[PairRecord]:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such training data file")
    records = [_record(f"{path}:{n}", raw) for n, raw in jsonio.iter_jsonl(path)]
    if not records:
        raise RecordError(f"{path}: no records")
    return records


def _tower(
    ids: np.ndarray, mask: np.ndarray, *, pack: bool, row_multiple: int, pad_id: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(ids, segment_ids, texts)` of one tower from its padded `[n, l]` tokenisation: one text
    per row, or packed into the fewest rows of `l` tokens, rounded up to a multiple of
    `row_multiple` (a fixed shape: the step compiles once per row count seen)."""
    n, length = ids.shape
    if not pack:
        texts = np.where(mask.any(1), np.arange(n), -1)[:, None]
        return ids, mask, texts.astype(np.int32)
    tokens = [row[m.astype(bool)] for row, m in zip(ids, mask, strict=True)]
    layout = packing.Layout((length,), rows=1)
    needed = len(packing.assign_rows([len(t) for t in tokens], layout))
    rows = max(row_multiple, -(-needed // row_multiple) * row_multiple)
    packed = packing.pack_fixed(tokens, dataclasses.replace(layout, rows=rows), pad_id=pad_id)
    return packed.token_ids, packed.segment_ids, packed.texts.astype(np.int32)


def tokenize_batch(
    records: Sequence[PairRecord],
    tokenizer,
    *,
    query_prefix: str,
    document_prefix: str,
    query_length: int,
    document_length: int,
    num_negatives: int,
    pack: bool = False,
    row_multiple: int = 1,
) -> TrainBatch:
    """One batch's arrays; `num_negatives` slots per example, the ones a record leaves empty
    flagged in `negative_valid` (and in no row). Unpacked, every tower has one row per text,
    padded to its length; `pack` puts several texts in a row (`data.packing`), each tower in a
    multiple of `row_multiple` rows (`TrainSetup.row_multiple`: whole GradCache chunks)."""
    b, g = len(records), num_negatives
    pad_id = getattr(tokenizer, "pad_token_id", None) or 0

    def encode(texts, length, valid=None):
        enc = tokenizer(
            texts, truncation=True, max_length=length, padding="max_length", return_tensors="np"
        )
        ids, mask = enc["input_ids"].astype(np.int32), enc["attention_mask"].astype(np.int32)
        mask = mask if valid is None else mask * valid.reshape(-1, 1)
        return _tower(ids, mask, pack=pack, row_multiple=row_multiple, pad_id=pad_id)

    def slots(values: tuple, fill) -> tuple:
        return (values + (fill,) * g)[:g]

    negatives = [slots(r.negatives, "") for r in records]
    labels = [slots(r.negative_labels, -1) for r in records]
    valid = np.array([[bool(n) for n in row] for row in negatives], bool).reshape(b, g)
    query = encode([query_prefix + r.query for r in records], query_length)
    positive = encode([document_prefix + r.positive for r in records], document_length)
    if g:
        flat = [document_prefix + n if n else "" for row in negatives for n in row]
        negative = encode(flat, document_length, valid)
    else:
        zeros = np.zeros((0, document_length), np.int32)
        negative = zeros, zeros, np.zeros((0, positive[2].shape[1]), np.int32)
    towers = {
        f"{name}_{part}": array
        for name, tower in zip(TOWERS, (query, positive, negative), strict=True)
        for part, array in zip(("ids", "segment_ids", "texts"), tower, strict=True)
    }
    return TrainBatch(
        **towers,
        negative_valid=valid,
        label=np.array([r.label for r in records], np.int32),
        negative_label=np.array(labels, np.int32).reshape(b, g),
        query_hash=np.array([text_hash(r.query) for r in records], np.int32),
        positive_hash=np.array([text_hash(r.positive) for r in records], np.int32),
        negative_hash=np.array(
            [[text_hash(n) for n in row] for row in negatives], np.int32
        ).reshape(b, g),
    )

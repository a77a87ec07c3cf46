"""Hard-negative mining with a teacher embedder.

For each record, the corpus is every positive of the same task and split in the whole build
(so negatives never leak across splits). Candidates are the teacher's top-k by cosine to the
query; a candidate is dropped when it is the positive itself or the query's text, when it
scores above `max_score_fraction` of the positive's score (likely an unlabelled positive,
the false negatives CAM also guards against), when it shares the record's class label, or
when it belongs to the same product group (the same product in another language or variant).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence

import numpy as np

from compass_jax.data.text_hash import normalize_text, text_hash


@dataclasses.dataclass(frozen=True)
class MiningConfig:
    teacher: str = "hashing"  # "hashing" or a compass-jax model (name, directory, checkpoint)
    num_negatives: int = 3
    top_k: int = 100  # the retrieval window negatives are drawn from
    max_score_fraction: float = 0.95
    tasks: tuple[str, ...] = ()  # tasks to mine; empty: all
    batch_size: int = 64  # teacher batch size
    max_length: int = 64  # teacher token limit
    dtype: str = "float32"  # teacher compute dtype


@dataclasses.dataclass
class Corpus:
    """The documents (unique positives) of one (task, split), across all partitions."""

    vectors: np.ndarray  # [n, d] float32, L2-normalised
    texts: list[str]
    hashes: np.ndarray  # [n] text_hash of each document
    labels: np.ndarray  # [n] class id or -1
    groups: list[str]
    index: dict[str, int]  # normalised text -> row


def doc_key(text: str) -> str:
    return normalize_text(text)


def unique_docs(records: Sequence[dict]) -> list[dict]:
    """One entry per distinct positive of each (task, split); the smallest uid describes it."""
    seen: dict[tuple, dict] = {}
    for rec in sorted(records, key=lambda r: r["uid"]):
        key = (rec["task"], rec["split"], doc_key(rec["positive"]))
        if key not in seen:
            seen[key] = {
                "task": rec["task"],
                "split": rec["split"],
                "text": rec["positive"],
                "label": rec["label"],
                "group_id": rec["group_id"],
            }
    return [seen[k] for k in sorted(seen)]


def build_corpus(docs: Sequence[dict], vectors: np.ndarray) -> dict[tuple[str, str], Corpus]:
    by_key: dict[tuple[str, str], list[int]] = {}
    for i, d in enumerate(docs):
        by_key.setdefault((d["task"], d["split"]), []).append(i)
    out = {}
    for key, rows in by_key.items():
        texts = [docs[i]["text"] for i in rows]
        out[key] = Corpus(
            vectors=np.asarray(vectors[rows], np.float32),
            texts=texts,
            hashes=np.array([text_hash(t) for t in texts], np.int64),
            labels=np.array([docs[i]["label"] for i in rows], np.int64),
            groups=[docs[i]["group_id"] for i in rows],
            index={doc_key(t): j for j, t in enumerate(texts)},
        )
    return out


def mine(
    records: Sequence[dict],
    query_vectors: np.ndarray,
    corpus: dict[tuple[str, str], Corpus],
    cfg: MiningConfig,
    stats: Counter | None = None,
    chunk: int = 256,
) -> list[dict]:
    """Records with `negatives` filled (in place of any they had), in input order."""
    stats = stats if stats is not None else Counter()
    out = [dict(r) for r in records]
    by_key: dict[tuple[str, str], list[int]] = {}
    for i, rec in enumerate(records):
        if not cfg.tasks or rec["task"] in cfg.tasks:
            by_key.setdefault((rec["task"], rec["split"]), []).append(i)
    for key, rows in sorted(by_key.items()):
        c = corpus[key]
        codes = {g: i for i, g in enumerate(dict.fromkeys(c.groups))}
        doc_groups = np.array([codes[g] for g in c.groups], np.int64)
        for start in range(0, len(rows), chunk):
            part = [records[i] for i in rows[start : start + chunk]]
            picks = _select(
                part, query_vectors[rows[start : start + chunk]], c, doc_groups, codes, cfg, stats
            )
            for i, negatives in zip(rows[start : start + chunk], picks, strict=True):
                out[i]["negatives"] = negatives
    return out


def _select(part, q, c: Corpus, doc_groups, codes, cfg: MiningConfig, stats) -> list[list[str]]:
    """The hardest valid candidates among each query's top_k, as masks over a score block."""
    m, n = len(part), len(c.texts)
    scores = q @ c.vectors.T  # [m, n]
    rows = np.arange(m)
    pos = np.array([c.index[doc_key(r["positive"])] for r in part])
    positive = scores[rows, pos]
    ceiling = np.where(positive > 0, cfg.max_score_fraction * positive, np.inf)
    k = min(cfg.top_k, n)
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1]
    window = scores >= kth[:, None]  # the teacher's top_k (ties included)
    itself = np.zeros((m, n), bool)
    itself[rows, pos] = True
    itself |= c.hashes[None, :] == np.array([text_hash(r["query"]) for r in part])[:, None]
    above = scores > ceiling[:, None]
    labels = np.array([r["label"] for r in part])
    same_label = (labels[:, None] >= 0) & (c.labels[None, :] == labels[:, None])
    groups = np.array([codes.get(r["group_id"], -1) for r in part])
    same_group = doc_groups[None, :] == groups[:, None]
    live = window & ~itself
    stats["dropped_above_score_fraction"] += int((live & above).sum())
    stats["dropped_same_label"] += int((live & ~above & same_label).sum())
    stats["dropped_same_group"] += int((live & ~above & ~same_label & same_group).sum())
    valid = live & ~above & ~same_label & ~same_group
    ranked = np.where(valid, scores, -np.inf)
    want = min(cfg.num_negatives, n)
    top = np.argpartition(-ranked, want - 1, axis=1)[:, :want] if want else np.zeros((m, 0), int)
    picks = []
    for row in range(m):
        chosen = sorted(
            (j for j in top[row].tolist() if valid[row, j]),
            key=lambda j: (-float(scores[row, j]), j),
        )
        picks.append([c.texts[j] for j in chosen])
        stats["negatives"] += len(chosen)
        stats["records_short_of_negatives"] += len(chosen) < cfg.num_negatives
    return picks

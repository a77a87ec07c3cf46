"""Hard-negative mining with a teacher embedder, one index per (task, split).

For each record, the corpus is every distinct positive of the same task and split in the whole
build (so negatives never leak across splits). Two steps, as units of both runners:

- `embed_unit` (per partition): the teacher embeds the partition's queries and its distinct
  positives (the documents), grouped by (task, split);
- `mine_unit` (per task and split): the documents of every partition make one corpus (a
  document found in several partitions is described by its smallest uid), indexed exactly or
  with an ANN index (`pipelines.ann`), and every query takes the teacher's top-k from it.

A candidate is dropped when it is the positive itself or the query's text, when it shares the
record's class label, when it belongs to the same product group (the same product in another
language or variant), or, in tasks without class labels, when it scores above
`max_score_fraction` of the positive's score (likely an unlabelled positive, the false
negatives CAM also guards against). A labelled task's false negatives are known exactly (the
same class), so the score ceiling would only discard its hardest true negatives: with a model
teacher, another category's name often scores within 5% of the right one. The survivors,
hardest first, become `negatives`, and their documents' classes `negative_labels`.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from compass_jax.data.text_hash import normalize_text, text_hash
from pipelines import ann
from pipelines.tasks import TASKS


@dataclasses.dataclass(frozen=True)
class MiningConfig:
    # "auto": multilingual-e5-small up to `auto_model_max_records` records, else "hashing";
    # "hashing"; or a compass-jax model (a bundled name, an HF directory, a checkpoint).
    teacher: str = "auto"
    auto_model_max_records: int = 10_000
    num_negatives: int = 3
    top_k: int = 100  # the retrieval window negatives are drawn from
    max_score_fraction: float = 0.95
    tasks: tuple[str, ...] = ()  # tasks to mine; empty: all
    index: str = "auto"  # exact | ivf | auto: ivf for corpora of `ann_min_docs` rows or more
    ann_min_docs: int = 50_000
    recall_target: float = 0.95  # recall@10 against exact search, on a sample of queries
    recall_sample: int = 256
    ivf_lists: int = 0  # 0: about 4 sqrt(rows)
    batch_size: int = 64  # teacher batch size
    max_length: int = 64  # teacher token limit
    dtype: str = "float32"  # teacher compute dtype


@dataclasses.dataclass
class Piece:
    """One partition's share of one (task, split): its records, their query vectors, and its
    distinct documents with their vectors (vectors are None when the task is not mined)."""

    records: list[dict]
    docs: list[dict]  # {key, uid, text, label, category, group_id}
    query_vec: np.ndarray | None = None  # [m, d] float16
    doc_vec: np.ndarray | None = None  # [n, d] float16


def doc_key(text: str) -> str:
    return normalize_text(text)


def mined(cfg: MiningConfig | None, task: str) -> bool:
    return cfg is not None and (not cfg.tasks or task in cfg.tasks)


def unique_docs(records: Sequence[dict]) -> list[dict]:
    """One entry per distinct positive (by normalised text); the smallest uid describes it."""
    seen: dict[str, dict] = {}
    for rec in sorted(records, key=lambda r: r["uid"]):
        key = doc_key(rec["positive"])
        if key not in seen:
            seen[key] = {
                "key": key,
                "uid": rec["uid"],
                "text": rec["positive"],
                "label": rec["label"],
                "category": rec.get("positive_label", -1),
                "group_id": rec["group_id"],
            }
    return [seen[k] for k in sorted(seen)]


def embed_unit(cfg: MiningConfig | None, records: Iterable[dict], teacher) -> tuple[dict, dict]:
    """{(task, split): Piece} of one partition's deduplicated records, and the report."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in sorted(records, key=lambda r: r["uid"]):
        groups.setdefault((r["task"], r["split"]), []).append(r)
    pieces, texts = {}, 0
    for key, rows in sorted(groups.items()):
        if not mined(cfg, key[0]):
            pieces[key] = Piece(rows, [])
            continue
        docs = unique_docs(rows)
        pieces[key] = Piece(
            rows,
            docs,
            teacher.encode([r["query"] for r in rows], prompt="query").astype(np.float16),
            teacher.encode([d["text"] for d in docs], prompt="document").astype(np.float16),
        )
        texts += len(rows) + len(docs)
    report = {"records": sum(len(p.records) for p in pieces.values()), "texts": texts}
    if texts:
        report["teacher"] = teacher.name
    return pieces, report


def mine_unit(cfg: MiningConfig | None, task: str, split: str, pieces: Iterable[Piece]):
    """The (task, split)'s records in uid order with `negatives` and `negative_labels`; the
    report (coverage, the exclusion counts, the index and its measured recall)."""
    pieces = list(pieces)
    order = sorted(
        ((r["uid"], i, j) for i, p in enumerate(pieces) for j, r in enumerate(p.records))
    )
    records = [dict(pieces[i].records[j]) for _, i, j in order]
    stats: Counter = Counter()
    report: dict = {"records": len(records)}
    if mined(cfg, task) and records:
        queries = np.stack([pieces[i].query_vec[j] for _, i, j in order]).astype(np.float32)
        best: dict[str, tuple[str, int, int]] = {}  # key -> (uid, piece, row): smallest uid
        for i, p in enumerate(pieces):
            for j, d in enumerate(p.docs):
                if d["key"] not in best or d["uid"] < best[d["key"]][0]:
                    best[d["key"]] = (d["uid"], i, j)
        keys = sorted(best)
        docs = [pieces[best[k][1]].docs[best[k][2]] for k in keys]
        vectors = np.stack([pieces[best[k][1]].doc_vec[best[k][2]] for k in keys])
        index = mine(
            records, queries, docs, vectors.astype(np.float32), cfg, stats,
            ceiling=not TASKS[task].labelled,
        )  # fmt: skip
        report["indexes"] = {f"{task}/{split}": index}
    with_negatives = sum(bool(r["negatives"]) for r in records)
    report["coverage"] = {task: {"records": len(records), "with_negatives": with_negatives}}
    report["mining"] = dict(stats)
    return records, report


def mine(
    records: list[dict],
    queries: np.ndarray,
    docs: Sequence[dict],
    vectors: np.ndarray,
    cfg: MiningConfig,
    stats: Counter,
    chunk: int = 256,
    *,
    ceiling: bool = True,
) -> dict:
    """Fill `negatives` / `negative_labels` of `records` in place; returns the index's info.
    `ceiling`: drop candidates above `max_score_fraction` of the positive's score."""
    ids, scores, info = ann.search(
        vectors,
        queries,
        min(cfg.top_k, len(docs)),
        method=cfg.index,
        min_docs=cfg.ann_min_docs,
        recall_target=cfg.recall_target,
        sample=cfg.recall_sample,
        nlist=cfg.ivf_lists,
    )
    row = {d["key"]: i for i, d in enumerate(docs)}
    table = {
        "hash": np.array([text_hash(d["text"]) for d in docs], np.int64),
        "label": np.array([d["label"] for d in docs], np.int64),
        "group": np.array([d["group_id"] for d in docs]),
    }
    for start in range(0, len(records), chunk):
        part = records[start : start + chunk]
        pos = np.array([row[doc_key(r["positive"])] for r in part])
        q = queries[start : start + chunk]
        positive = np.einsum("md,md->m", q, vectors[pos])
        limit = np.where(positive > 0, cfg.max_score_fraction * positive, np.inf)
        if not ceiling:
            limit = np.full(len(part), np.inf)
        picks = _select(
            part, pos, limit, ids[start : start + chunk], scores[start : start + chunk],
            table, cfg, stats,
        )  # fmt: skip
        for r, chosen in zip(part, picks, strict=True):
            r["negatives"] = [docs[j]["text"] for j in chosen]
            r["negative_labels"] = [int(docs[j]["category"]) for j in chosen]
    return info


def _select(part, pos, limit, ids, scores, table, cfg: MiningConfig, stats) -> list[list[int]]:
    """The hardest valid candidates of each query's top-k, as masks over `[m, k]`."""
    found = ids >= 0
    safe = np.where(found, ids, 0)
    itself = (safe == pos[:, None]) | (
        table["hash"][safe] == np.array([text_hash(r["query"]) for r in part])[:, None]
    )
    above = scores > limit[:, None]
    labels = np.array([r["label"] for r in part])
    same_label = (labels[:, None] >= 0) & (table["label"][safe] == labels[:, None])
    same_group = table["group"][safe] == np.array([r["group_id"] for r in part])[:, None]
    live = found & ~itself
    stats["dropped_above_score_fraction"] += int((live & above).sum())
    stats["dropped_same_label"] += int((live & ~above & same_label).sum())
    stats["dropped_same_group"] += int((live & ~above & ~same_label & same_group).sum())
    valid = live & ~above & ~same_label & ~same_group
    picks = []
    for r in range(len(part)):
        cols = np.flatnonzero(valid[r])
        order = sorted(cols.tolist(), key=lambda c: (-float(scores[r, c]), int(ids[r, c])))
        chosen = [int(ids[r, c]) for c in order[: cfg.num_negatives]]
        picks.append(chosen)
        stats["negatives"] += len(chosen)
        stats["records_short_of_negatives"] += len(chosen) < cfg.num_negatives
    return picks

"""Top-k inner-product search for mining: exact, or approximate over a faiss IVF index.

Exact search is a blocked matmul (never an `[m, n]` matrix larger than a block of queries).
The approximate index is faiss's `IndexIVFFlat` (inverted lists over k-means cells, vectors
kept exactly): picked over HNSW (faiss's and usearch's) because it builds an order of
magnitude faster, and its build is deterministic whatever the thread count, so a build gives
the same negatives on any runner (`benchmarks/mining_search.py` has the figures). Its one knob,
`nprobe` (cells visited per query), is calibrated per index: raised until the recall@10 of a
sample of the real queries against exact search reaches the target, and that recall is
reported. When the target needs more than a quarter of the cells (vectors with no cluster
structure), the search falls back to exact: a matmul scans everything faster than IVF would.

Results are `(ids [m, k] int64, scores [m, k] float32)`, best first (exact search breaks ties
by the lower id); an id of -1 pads a row that has fewer than k neighbours.
"""

from __future__ import annotations

import math

import numpy as np
from jaxtyping import Float, Int

RECALL_K = 10


def exact_topk(
    corpus: Float[np.ndarray, "n d"],
    queries: Float[np.ndarray, "m d"],
    k: int,
    chunk: int | None = None,
) -> tuple[Int[np.ndarray, "m k"], Float[np.ndarray, "m k"]]:
    m, n = len(queries), len(corpus)
    chunk = chunk or max(1, min(256, 2**25 // max(n, 1)))  # score blocks of at most 128 MB
    k_eff = min(k, n)
    ids = np.full((m, k), -1, np.int64)
    scores = np.full((m, k), -np.inf, np.float32)
    for start in range(0, m, chunk):
        s = queries[start : start + chunk] @ corpus.T  # [c, n]
        top = np.argpartition(-s, k_eff - 1, axis=1)[:, :k_eff] if k_eff < n else None
        if top is None:
            top = np.broadcast_to(np.arange(n), s.shape)
        vals = np.take_along_axis(s, top, axis=1)
        order = np.lexsort((top, -vals), axis=1)
        ids[start : start + chunk, :k_eff] = np.take_along_axis(top, order, axis=1)
        scores[start : start + chunk, :k_eff] = np.take_along_axis(vals, order, axis=1)
    return ids, scores


def recall_at(approx: np.ndarray, exact: np.ndarray, k: int = RECALL_K) -> float:
    """Mean share of each row's exact top-k found in its approximate top-k."""
    pairs = zip(approx, exact, strict=True)
    hits = [len(set(a[:k].tolist()) & set(e[:k].tolist()) - {-1}) for a, e in pairs]
    want = [min(k, int((e[:k] >= 0).sum())) or 1 for e in exact]
    return float(np.mean(np.array(hits) / np.array(want))) if len(hits) else 1.0


def ivf_lists(n: int) -> int:
    """Cells for n rows: about 4 sqrt(n), with at least 40 training rows per cell."""
    return max(1, min(int(4 * math.sqrt(n)), n // 40))


class IVFIndex:
    """faiss IndexIVFFlat over L2-normalised rows, searched by inner product."""

    def __init__(self, corpus: Float[np.ndarray, "n d"], nlist: int = 0, seed: int = 0):
        import faiss

        corpus = np.ascontiguousarray(corpus, np.float32)
        n, d = corpus.shape
        self.nlist = nlist or ivf_lists(n)
        self.index = faiss.IndexIVFFlat(
            faiss.IndexFlatIP(d), d, self.nlist, faiss.METRIC_INNER_PRODUCT
        )
        # k-means on at most 64 rows per cell (faiss subsamples with the seed), 10 rounds: the
        # cells only route queries, and calibration makes up for rougher cells with nprobe.
        self.index.cp.seed, self.index.cp.niter = seed, 10
        self.index.cp.max_points_per_centroid = 64
        self.index.train(corpus)
        self.index.add(corpus)
        self.nprobe = 1

    def search(self, queries, k: int, nprobe: int | None = None):
        self.index.nprobe = nprobe or self.nprobe
        scores, ids = self.index.search(np.ascontiguousarray(queries, np.float32), k)
        return ids.astype(np.int64), scores.astype(np.float32)

    def calibrate(self, corpus, sample, target: float, k: int = RECALL_K) -> float:
        """Raise nprobe (doubling) until `sample`'s recall@k reaches `target`; the recall."""
        exact, _ = exact_topk(corpus, sample, k)
        nprobe = 1
        while True:
            recall = recall_at(self.search(sample, k, nprobe)[0], exact, k)
            if recall >= target or nprobe >= self.nlist:
                self.nprobe = nprobe
                return recall
            nprobe = min(2 * nprobe, self.nlist)


def search(
    corpus: Float[np.ndarray, "n d"],
    queries: Float[np.ndarray, "m d"],
    k: int,
    *,
    method: str = "auto",
    min_docs: int = 50_000,
    recall_target: float = 0.95,
    sample: int = 256,
    nlist: int = 0,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Top-k of every query; `method` exact | ivf | auto (ivf from `min_docs` rows on)."""
    if method not in ("auto", "exact", "ivf"):
        raise ValueError(f"mining.index {method!r}: expected auto, exact or ivf")
    n = len(corpus)
    if method == "exact" or (method == "auto" and n < min_docs) or n < 2 or not len(queries):
        ids, scores = exact_topk(corpus, queries, k)
        return ids, scores, {"index": "exact", "docs": n, "queries": len(queries)}
    index = IVFIndex(corpus, nlist)
    picks = np.unique(np.linspace(0, len(queries) - 1, min(sample, len(queries))).astype(int))
    recall = index.calibrate(corpus, queries[picks], recall_target)
    if 4 * index.nprobe > index.nlist:  # the target needs most cells: a matmul does it faster
        ids, scores = exact_topk(corpus, queries, k)
        return ids, scores, {"index": "exact", "docs": n, "queries": len(queries),
                             "ivf_nprobe_needed": index.nprobe, "nlist": index.nlist}  # fmt: skip
    ids, scores = index.search(queries, min(k, n))
    if ids.shape[1] < k:
        pad = k - ids.shape[1]
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    info = {
        "index": "ivf",
        "docs": n,
        "queries": len(queries),
        "nlist": index.nlist,
        "nprobe": index.nprobe,
        f"recall_at_{RECALL_K}": round(recall, 4),
        "recall_sample": len(picks),
    }
    return ids, scores, info

"""Exact and near-duplicate removal over the whole build, within each task.

Exact: records whose normalised (query, positive) are equal. Near: MinHash over character
5-gram shingles of the pair, banded LSH to find candidates, kept as duplicates when the
signatures agree on at least `threshold` of their slots (an estimate of Jaccard similarity).
In each duplicate cluster the record with the smallest uid survives, so the decision does not
depend on partitioning or on the order in which shards finish.
"""

from __future__ import annotations

import hashlib
import zlib

import numpy as np

from compass_jax.data.text_hash import normalize_text

SHINGLE = 5
MAX_CHARS = 400  # long descriptions: the opening carries the identity, the rest the noise


def pair_text(record: dict) -> str:
    return normalize_text(record["query"]) + " || " + normalize_text(record["positive"])[:MAX_CHARS]


def exact_key(record: dict) -> str:
    digest = hashlib.blake2b(pair_text(record).encode("utf-8"), digest_size=12).hexdigest()
    return f"{record['task']}:{digest}"


def minhash_params(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, 0x5EED])
    a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    return a, b


def signature(text: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """MinHash with multiply-shift hashing: uint64 arithmetic wraps, the top 32 bits are kept."""
    grams = {text[i : i + SHINGLE] for i in range(max(1, len(text) - SHINGLE + 1))}
    x = np.fromiter((zlib.crc32(g.encode("utf-8")) for g in grams), np.uint64, len(grams))
    with np.errstate(over="ignore"):
        h = (a[:, None] * x[None, :] + b[:, None]) >> np.uint64(32)
    return h.min(axis=1).astype(np.uint32)


class _UnionFind:
    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)  # the smaller index (uid) is the root


def find_duplicates(
    uids: list[str],
    tasks: list[str],
    exact: list[str],
    sigs: np.ndarray | None,
    *,
    bands: int = 8,
    threshold: float = 0.9,
) -> dict[str, str]:
    """uid -> reason, for every record that is not the first (smallest uid) of its cluster."""
    order = sorted(range(len(uids)), key=lambda i: uids[i])
    uids = [uids[i] for i in order]
    tasks = [tasks[i] for i in order]
    exact = [exact[i] for i in order]
    drops: dict[str, str] = {}
    first: dict[str, int] = {}
    for i, key in enumerate(exact):
        if key in first:
            drops[uids[i]] = f"exact duplicate of {uids[first[key]]}"
        else:
            first[key] = i
    if sigs is None or not len(uids):
        return drops
    sigs = sigs[order]
    rows = sigs.shape[1] // bands
    uf = _UnionFind(len(uids))
    alive = [i for i in range(len(uids)) if uids[i] not in drops]
    for band in range(bands):
        buckets: dict[tuple, list[int]] = {}
        block = sigs[:, band * rows : (band + 1) * rows]
        for i in alive:
            buckets.setdefault((tasks[i], block[i].tobytes()), []).append(i)
        for members in buckets.values():
            for j in members[1:]:
                if uf.find(j) != uf.find(members[0]) and (
                    np.mean(sigs[members[0]] == sigs[j]) >= threshold
                ):
                    uf.union(members[0], j)
    for i in alive:
        root = uf.find(i)
        if root != i:
            drops[uids[i]] = f"near duplicate of {uids[root]}"
    return drops

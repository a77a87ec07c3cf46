"""Stable hashes that place work: per-item random streams, split and partition assignment.

All are pure functions of their inputs (blake2b, never Python's salted `hash`), so a product
lands in the same split, partition and random stream on any machine, in any process, however
the build is sharded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np

SPLITS = ("train", "validation", "test")


def stable_int(*parts: object) -> int:
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def rng_for(seed: int, *parts: object) -> np.random.Generator:
    return np.random.default_rng([seed, stable_int(*parts)])


def unit_interval(*parts: object) -> float:
    return stable_int(*parts) / 2.0**64


def split_of(group_id: str, seed: int, fractions: Mapping[str, float]) -> str:
    """Whole groups go to one split, so no product (in any language) leaks across splits."""
    u = unit_interval("split", seed, group_id)
    total = sum(fractions.values())
    edge = 0.0
    for name in SPLITS:
        edge += fractions.get(name, 0.0) / total
        if u < edge:
            return name
    return SPLITS[-1]


def partition_of(group_id: str, partitions: int) -> int:
    """Which partition a group's products are processed in (all languages together)."""
    return stable_int("partition", group_id) % partitions

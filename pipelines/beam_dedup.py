"""Whole-build duplicate removal as Beam transforms, equal to `filters.dedup.find_duplicates`.

Exact duplicates: records grouped by exact key; the smallest uid of a group survives. Near
duplicates among the survivors: each MinHash signature band is a bucket key (with the task);
in a bucket, the smallest uid is compared with every other member, and a pair whose
signatures agree on at least `threshold` of their slots is an edge. The connected components
of those edges (a union-find over the edges alone: there are as many as duplicates, not as
records) are the clusters, and each one's smallest uid survives. The edges and the components
are exactly `find_duplicates`' (its skip of already-joined pairs never changes a component),
so both runners drop the same records for the same reasons.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np


def _exact_group(item):
    _, members = item
    members = sorted(members, key=lambda m: m[0])
    first = members[0][0]
    yield beam.pvalue.TaggedOutput("survivors", members[0])
    for uid, _, _ in members[1:]:
        yield (uid, f"exact duplicate of {first}")


def _band_keys(member, bands: int):
    uid, task, sig = member
    rows = len(sig) // bands
    for band in range(bands):
        yield (task, band, sig[band * rows : (band + 1) * rows].tobytes()), (uid, sig)


def _bucket_edges(item, threshold: float):
    _, members = item
    members = sorted(members, key=lambda m: m[0])
    uid0, sig0 = members[0]
    for uid, sig in members[1:]:
        if np.mean(sig0 == sig) >= threshold:
            yield uid0, uid


def _components(edges) -> list[tuple[str, str]]:
    parent: dict[str, str] = {}

    def find(u: str) -> str:
        while parent.setdefault(u, u) != u:
            parent[u] = parent[parent[u]]
            u = parent[u]
        return u

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)  # the smaller uid is the root
    return [(u, f"near duplicate of {find(u)}") for u in sorted(parent) if find(u) != u]


class Deduplicate(beam.PTransform):
    """`(uid, task, exact key, signature | None)` -> `(uid, reason)` for every dropped record."""

    def __init__(self, *, near: bool, bands: int, threshold: float):
        super().__init__()
        self.near, self.bands, self.threshold = near, bands, threshold

    def expand(self, keys):
        exact = (
            keys
            | "ByExactKey" >> beam.Map(lambda k: (k[2], (k[0], k[1], k[3])))
            | "GroupExact" >> beam.GroupByKey()
            | "ExactDrops" >> beam.FlatMap(_exact_group).with_outputs("survivors", main="drops")
        )
        if not self.near:
            return exact.drops
        near = (
            exact.survivors
            | "BandKeys" >> beam.FlatMap(_band_keys, self.bands)
            | "GroupBands" >> beam.GroupByKey()
            | "Edges" >> beam.FlatMap(_bucket_edges, self.threshold)
            | "AllEdges" >> beam.combiners.ToList()
            | "Components" >> beam.FlatMap(_components)
        )
        return (exact.drops, near) | "AllDrops" >> beam.Flatten()

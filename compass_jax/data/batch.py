"""`TrainBatch`: tokenised (query, positive, hard negatives) triples with the metadata Class-Aware
Masking needs, as one typed pytree.

On the host its fields are numpy arrays (`tokenize_batch` makes them); in the training step they
are global `jax.Array`s split over the batch axes of the mesh, every field's first axis (rows of
a tower, examples of the metadata) over all of them.

Each of the three towers (queries, positives, hard negatives) is laid out as
`compass_jax.data.packing` lays out inference batches: `*_ids[r, l]` token ids, `*_segment_ids[r,
l]` (0 padding, k the row's k-th text) and `*_texts[r, s]`, the index of each row's k-th text
(-1: none); for queries and positives the example, for negatives the slot `example * g + j`.
Packed, a row holds several texts; unpacked, row i holds text i alone (`segment_ids` is then the
attention mask and `texts` is `[[0], [1], ...]`). `negative_valid` marks which of an example's `g`
hard-negative slots hold a negative (records carry 0..g of them). Letters: `b` examples, `g`
hard-negative slots per example, `r` rows, `l` tokens per row, `s` texts per row.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from jaxtyping import Array, Bool, Int

TOWERS = ("query", "positive", "negative")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainBatch:
    query_ids: Int[Array, "rq lq"]
    query_segment_ids: Int[Array, "rq lq"]
    query_texts: Int[Array, "rq sq"]  # example index, -1 none
    positive_ids: Int[Array, "rp ld"]
    positive_segment_ids: Int[Array, "rp ld"]
    positive_texts: Int[Array, "rp sd"]
    negative_ids: Int[Array, "rn ld"]
    negative_segment_ids: Int[Array, "rn ld"]
    negative_texts: Int[Array, "rn sd"]  # slot index example * g + j, -1 none
    negative_valid: Bool[Array, "b g"]
    label: Int[Array, " b"]  # the example's class id; -1 unlabelled
    negative_label: Int[Array, "b g"]  # each hard negative's class id; -1 unlabelled
    query_hash: Int[Array, " b"]  # compass_jax.data.text_hash of the texts
    positive_hash: Int[Array, " b"]
    negative_hash: Int[Array, "b g"]

    @property
    def num_negatives(self) -> int:
        return self.negative_valid.shape[1]

    def tower(self, name: str) -> tuple:
        """`(ids [r, l], segment_ids [r, l], texts [r, s])` of tower `name` (`TOWERS`)."""
        return tuple(getattr(self, f"{name}_{part}") for part in ("ids", "segment_ids", "texts"))

    def real_tokens(self) -> tuple[int, int]:
        """`(real tokens, computed tokens)` over the towers (host arrays)."""
        segments = [np.asarray(getattr(self, f"{n}_segment_ids")) for n in TOWERS]
        return sum(int(np.count_nonzero(s)) for s in segments), sum(s.size for s in segments)

    @classmethod
    def filled(cls, value) -> TrainBatch:
        """A batch whose every field is `value` (e.g. a sharding, for `jax.jit`)."""
        return cls(**{f.name: value for f in dataclasses.fields(cls)})

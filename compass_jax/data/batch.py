"""`TrainBatch`: tokenised (query, positive, hard negatives) triples with the metadata Class-Aware
Masking needs, as one typed pytree.

On the host its fields are numpy arrays (`tokenize_batch` makes them); in the training step they
are global `jax.Array`s split over the batch axes of the mesh. Every field has the example axis
first, so one sharding places the whole batch and each example's negatives sit on its device.

Two kinds of mask, two names: `*_attention_mask` marks real tokens (1) against padding (0), per
token; `negative_valid` marks which of an example's `g` hard-negative slots hold a negative
(records carry 0..g of them). Letters: `b` examples, `g` hard-negative slots per example, `lq`
query tokens, `ld` document tokens.
"""

from __future__ import annotations

import dataclasses

import jax
from jaxtyping import Array, Bool, Int


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainBatch:
    query_ids: Int[Array, "b lq"]
    query_attention_mask: Int[Array, "b lq"]
    positive_ids: Int[Array, "b ld"]
    positive_attention_mask: Int[Array, "b ld"]
    negative_ids: Int[Array, "b g ld"]
    negative_attention_mask: Int[Array, "b g ld"]  # all 0 in an empty slot
    negative_valid: Bool[Array, "b g"]
    label: Int[Array, " b"]  # the example's class id; -1 unlabelled
    negative_label: Int[Array, "b g"]  # each hard negative's class id; -1 unlabelled
    query_hash: Int[Array, " b"]  # compass_jax.data.text_hash of the texts
    positive_hash: Int[Array, " b"]
    negative_hash: Int[Array, "b g"]

    @property
    def num_negatives(self) -> int:
        return self.negative_valid.shape[1]

    @classmethod
    def filled(cls, value) -> TrainBatch:
        """A batch whose every field is `value` (e.g. a sharding, for `jax.jit`)."""
        return cls(**{f.name: value for f in dataclasses.fields(cls)})

"""From token states to sentence embeddings: pooling, Matryoshka truncation, L2 normalisation.

Pure functions of arrays. `embed_segments` is the whole path from token ids of packed rows (one
or several texts per row); `embed` is its one-text-per-row form, which training calls.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from compass_jax import models
from compass_jax.config import ModelConfig

Pooling = Literal["mean", "cls", "last"]
POOLINGS: tuple[str, ...] = ("mean", "cls", "last")


def pool_segments(
    hidden: Float[Array, "b l d"], segment_ids: Int[Array, "b l"], mode: Pooling, segments: int
) -> Float[Array, "b s d"]:
    """One float32 vector per segment `1..s` of each row (several texts packed into a row):
    the mean of its tokens, its first token ("cls") or its last ("last"). Padding (segment 0)
    never contributes; a segment with no tokens gives zeros (mean) or an arbitrary token."""
    hidden = hidden.astype(jnp.float32)
    member = segment_ids[..., None] == jnp.arange(1, segments + 1)  # [b, l, s]
    if mode == "mean":
        weights = member.astype(jnp.float32)
        total = jnp.einsum("bls,bld->bsd", weights, hidden, precision=jax.lax.Precision.HIGHEST)
        return total / jnp.maximum(weights.sum(1), 1e-9)[..., None]
    if mode == "cls":
        index = jnp.argmax(member, axis=1)
    elif mode == "last":
        index = member.shape[1] - 1 - jnp.argmax(member[:, ::-1], axis=1)
    else:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {mode!r}")
    return jnp.take_along_axis(hidden, index[..., None], axis=1)


def pool(
    hidden: Float[Array, "b l d"], mask: Bool[Array, "b l"], mode: Pooling
) -> Float[Array, "b d"]:
    """Sentence vectors in float32 from token states, one text per row (padded on either side:
    "cls" and "last" take its first and last real token)."""
    return pool_segments(hidden, mask.astype(jnp.int32), mode, 1)[:, 0]


def l2_normalize(x: Float[Array, "b d"], eps: float = 1e-12) -> Float[Array, "b d"]:
    # The floor goes under the square root: `norm`'s gradient at a zero vector (an empty hard-
    # negative slot pools to zeros) is 0/0, a NaN that a zero cotangent does not cancel.
    return x / jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(x), axis=-1, keepdims=True), eps**2))


def truncate(x: Float[Array, "b d"], dim: int | None) -> Float[Array, "b e"]:
    """Matryoshka truncation: keep the first `dim` coordinates (renormalise afterwards)."""
    if dim is None or dim == x.shape[-1]:
        return x
    if not 0 < dim <= x.shape[-1]:
        raise ValueError(f"dim must be in 1..{x.shape[-1]}, got {dim}")
    return x[..., :dim]


def embed_segments(
    cfg: ModelConfig,
    params: models.Params,
    input_ids: Int[Array, "b l"] | Float[Array, "b l d"],
    segment_ids: Int[Array, "b l"],
    *,
    segments: int,
    pooling: Pooling,
    normalize: bool = True,
    dim: int | None = None,
    dropout_key: jax.Array | None = None,
    trunk: int = 0,
) -> Float[Array, "b s e"]:
    """Token ids of rows packed with up to `segments` texts each (`segment_ids` 1..s, 0 for
    padding; see `compass_jax.data.packing`) -> float32 embeddings of every segment, each equal
    to what the text gives alone in its own row (`e` = `dim` or the model width).

    With `trunk` = k > 0 the rows are not token ids but the states of a locked trunk of k
    layers (`models.apply_trunk`, `compass_jax.trunk`), and only the layers above it run."""
    if trunk:
        hidden = models.apply_top(
            cfg, params, input_ids, segment_ids, trunk, dropout_key=dropout_key
        )
    else:
        hidden = models.apply(cfg, params, input_ids, segment_ids, dropout_key=dropout_key)
    vectors = truncate(pool_segments(hidden, segment_ids, pooling, segments), dim)
    return l2_normalize(vectors) if normalize else vectors


def embed(
    cfg: ModelConfig,
    params: models.Params,
    input_ids: Int[Array, "b l"] | Float[Array, "b l d"],
    attention_mask: Bool[Array, "b l"],
    **options,
) -> Float[Array, "b e"]:
    """Token ids, one text per row -> float32 sentence embeddings (`e` = `dim` or the model
    width); `options` are `embed_segments`' (pooling, normalize, dim, dropout_key, trunk)."""
    mask = attention_mask.astype(jnp.int32)
    return embed_segments(cfg, params, input_ids, mask, segments=1, **options)[:, 0]

"""From token states to sentence embeddings: pooling, Matryoshka truncation, L2 normalisation.

Pure functions of arrays; `embed` is the whole path from token ids and is what training, the
`embed` command and evaluation all call.
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


def pool(
    hidden: Float[Array, "b l d"], mask: Bool[Array, "b l"], mode: Pooling
) -> Float[Array, "b d"]:
    """Sentence vectors in float32 from token states; padding positions never contribute."""
    hidden = hidden.astype(jnp.float32)
    mask = mask.astype(bool)
    if mode == "mean":
        weights = mask.astype(jnp.float32)[..., None]
        return (hidden * weights).sum(1) / jnp.maximum(weights.sum(1), 1e-9)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "last":
        # The last real token, wherever padding sits (left-padded rows end at l - 1).
        positions = jnp.arange(mask.shape[1])
        last = jnp.max(jnp.where(mask, positions, -1), axis=1)
        return jnp.take_along_axis(hidden, jnp.maximum(last, 0)[:, None, None], axis=1)[:, 0]
    raise ValueError(f"pooling must be one of {POOLINGS}, got {mode!r}")


def l2_normalize(x: Float[Array, "b d"], eps: float = 1e-12) -> Float[Array, "b d"]:
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def truncate(x: Float[Array, "b d"], dim: int | None) -> Float[Array, "b e"]:
    """Matryoshka truncation: keep the first `dim` coordinates (renormalise afterwards)."""
    if dim is None or dim == x.shape[-1]:
        return x
    if not 0 < dim <= x.shape[-1]:
        raise ValueError(f"dim must be in 1..{x.shape[-1]}, got {dim}")
    return x[..., :dim]


def embed(
    cfg: ModelConfig,
    params: models.Params,
    input_ids: Int[Array, "b l"],
    attention_mask: Bool[Array, "b l"],
    *,
    pooling: Pooling,
    normalize: bool = True,
    dim: int | None = None,
    dropout_key: jax.Array | None = None,
) -> Float[Array, "b e"]:
    """Token ids -> float32 sentence embeddings (`e` = `dim` or the model width)."""
    hidden = models.apply(cfg, params, input_ids, attention_mask, dropout_key=dropout_key)
    vectors = truncate(pool(hidden, attention_mask, pooling), dim)
    return l2_normalize(vectors) if normalize else vectors

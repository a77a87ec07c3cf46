"""Gradient caching: contrastive gradients for batches far larger than activation memory.

Pass 1 embeds the batch chunk by chunk with no activations kept; the loss and its gradient with
respect to the embeddings are taken over the whole global batch; pass 2 re-embeds each chunk and
pulls that chunk's embedding gradient back to the parameters with `jax.vjp`, accumulating. Memory
grows with `b x d` (the embeddings) plus one chunk's activations, not with `b x activations`.

Dropout keys are derived from (tower, chunk index) and replayed identically in both passes; a
second pass with different masks would silently compute the gradient of a different function.

Chunks are laid out so every chunk spans all batch shards: a `[n, ...]` array split over `s`
devices is viewed as `[s, k, c, ...]` and chunk `j` is `[:, j]`, so each device embeds `c` of its
own rows per step and no chunk ever lives on a single device.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

EmbedFn = Callable[[Any, jax.Array, jax.Array, jax.Array | None], Float[Array, "n e"]]
Towers = Mapping[str, tuple[Int[Array, "n l"], Int[Array, "n l"]]]


def to_chunks(x: jax.Array, shards: int, chunk: int) -> jax.Array:
    """`[n, ...]` -> `[k, chunk, ...]`, chunk `j` taking `chunk // shards` rows from each shard."""
    n = x.shape[0]
    per_shard, rows = n // shards, chunk // shards
    if n % shards or chunk % shards or per_shard % rows:
        raise ValueError(
            f"{n} rows over {shards} shards cannot be cut into chunks of {chunk} "
            f"(need chunk divisible by shards and rows per shard divisible by chunk / shards)"
        )
    k = per_shard // rows
    x = x.reshape(shards, k, rows, *x.shape[1:]).swapaxes(0, 1)
    return x.reshape(k, chunk, *x.shape[3:])


def from_chunks(y: jax.Array, shards: int) -> jax.Array:
    """Inverse of `to_chunks`."""
    k, chunk = y.shape[:2]
    y = y.reshape(k, shards, chunk // shards, *y.shape[2:]).swapaxes(0, 1)
    return y.reshape(k * chunk, *y.shape[3:])


def _chunk_keys(key: jax.Array | None, k: int):
    return None if key is None else jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(k))


def chunked_embed(
    embed_fn: EmbedFn,
    params: Any,
    ids: Int[Array, "n l"],
    mask: Int[Array, "n l"],
    key: jax.Array | None,
    *,
    chunk: int,
    shards: int = 1,
) -> Float[Array, "n e"]:
    """Embeddings of all rows, `chunk` rows at a time (differentiable; under `stop_gradient`
    or outside `grad` no activations are kept)."""
    ids_c, mask_c = to_chunks(ids, shards, chunk), to_chunks(mask, shards, chunk)
    keys = _chunk_keys(key, ids_c.shape[0])

    def body(_, xs):
        i, m, k = xs
        return None, embed_fn(params, i, m, k)

    _, out = jax.lax.scan(body, None, (ids_c, mask_c, keys))
    return from_chunks(out, shards)


def chunked_vjp(
    embed_fn: EmbedFn,
    params: Any,
    ids: Int[Array, "n l"],
    mask: Int[Array, "n l"],
    key: jax.Array | None,
    cotangent: Float[Array, "n e"],
    *,
    chunk: int,
    shards: int = 1,
) -> Any:
    """`sum_j vjp(embed(chunk_j))(cotangent_j)`: the param gradient, one chunk live at a time."""
    ids_c, mask_c = to_chunks(ids, shards, chunk), to_chunks(mask, shards, chunk)
    ct_c = to_chunks(cotangent, shards, chunk)
    keys = _chunk_keys(key, ids_c.shape[0])

    def body(acc, xs):
        i, m, ct, k = xs
        _, pullback = jax.vjp(lambda p: embed_fn(p, i, m, k), params)
        (grad,) = pullback(ct.astype(jnp.float32))
        return jax.tree.map(jnp.add, acc, grad), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    grads, _ = jax.lax.scan(body, zeros, (ids_c, mask_c, ct_c, keys))
    return grads


def tower_keys(key: jax.Array | None, towers: Towers) -> dict[str, jax.Array | None]:
    """One dropout key per tower, fixed by the tower's rank in sorted name order: jit flattens
    dicts in sorted key order, so insertion order must not matter."""
    return {
        name: None if key is None else jax.random.fold_in(key, i)
        for i, name in enumerate(sorted(towers))
    }


def embed_towers(embed_fn, params, towers: Towers, key, *, chunk: int, shards: int = 1):
    """Embeddings of every tower (queries, positives, negatives, ...), chunked."""
    keys = tower_keys(key, towers)
    return {
        name: chunked_embed(embed_fn, params, ids, mask, keys[name], chunk=chunk, shards=shards)
        for name, (ids, mask) in towers.items()
    }


def gradcache_value_and_grad(
    embed_fn: EmbedFn,
    loss_fn: Callable[[dict[str, jax.Array]], tuple[jax.Array, Any]],
    params: Any,
    towers: Towers,
    key: jax.Array | None,
    *,
    chunk: int,
    shards: int = 1,
) -> tuple[tuple[jax.Array, Any], Any]:
    """`((loss, aux), grads)` of `loss_fn(embed_towers(params))` by gradient caching."""
    embeddings = jax.lax.stop_gradient(
        embed_towers(embed_fn, params, towers, key, chunk=chunk, shards=shards)
    )
    (loss, aux), emb_grads = jax.value_and_grad(loss_fn, has_aux=True)(embeddings)
    keys = tower_keys(key, towers)
    grads = None
    for name, (ids, mask) in towers.items():
        g = chunked_vjp(
            embed_fn, params, ids, mask, keys[name], emb_grads[name], chunk=chunk, shards=shards
        )
        grads = g if grads is None else jax.tree.map(jnp.add, grads, g)
    return (loss, aux), grads

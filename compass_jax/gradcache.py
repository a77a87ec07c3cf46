"""Gradient caching: contrastive gradients for batches far larger than activation memory.

Pass 1 embeds the batch chunk by chunk with no activations kept; the loss and its gradient with
respect to the embeddings are taken over the whole global batch; pass 2 re-embeds each chunk and
pulls that chunk's embedding gradient back to the parameters with `jax.vjp`, accumulating. Memory
grows with `b x d` (the embeddings) plus one chunk's activations, not with `b x activations`.

Dropout keys are derived from (tower, chunk index) and replayed identically in both passes; a
second pass with different masks would silently compute the gradient of a different function.

Chunks are laid out so every chunk spans all batch shards: a `[n, ...]` array split over `s`
devices is viewed as `[s, k, c, ...]` and chunk `j` is `[:, j]`, so each device embeds `c` of its
own rows per step and no chunk ever lives on a single device. Towers of one row shape (queries,
positives and negatives of one length) run as one scan over all their chunks, so the program
holds one copy of the model per shape rather than per tower.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
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


def _scan_embed(embed_fn: EmbedFn, params: Any, ids_c, mask_c, keys_c) -> Float[Array, "k c e"]:
    def body(_, xs):
        i, m, k = xs
        return None, embed_fn(params, i, m, k)

    return jax.lax.scan(body, None, (ids_c, mask_c, keys_c))[1]


def _scan_vjp(embed_fn: EmbedFn, params: Any, ids_c, mask_c, ct_c, keys_c) -> Any:
    def body(acc, xs):
        i, m, ct, k = xs
        _, pullback = jax.vjp(lambda p: embed_fn(p, i, m, k), params)
        (grad,) = pullback(ct.astype(jnp.float32))
        return jax.tree.map(lambda a, g: a + g.astype(jnp.float32), acc, grad), None

    # float32 sums whatever the params' dtype (a bf16 copy of the masters sums chunk gradients
    # in float32 all the same).
    zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), params)
    return jax.lax.scan(body, zeros, (ids_c, mask_c, ct_c, keys_c))[0]


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
    return from_chunks(_scan_embed(embed_fn, params, ids_c, mask_c, keys), shards)


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
    """`sum_j vjp(embed(chunk_j))(cotangent_j)`: the param gradient (float32), one chunk live
    at a time."""
    ids_c, mask_c = to_chunks(ids, shards, chunk), to_chunks(mask, shards, chunk)
    ct_c = to_chunks(cotangent, shards, chunk)
    keys = _chunk_keys(key, ids_c.shape[0])
    return _scan_vjp(embed_fn, params, ids_c, mask_c, ct_c, keys)


def tower_keys(key: jax.Array | None, towers: Towers) -> dict[str, jax.Array | None]:
    """One dropout key per tower, fixed by the tower's rank in sorted name order: jit flattens
    dicts in sorted key order, so insertion order must not matter."""
    return {
        name: None if key is None else jax.random.fold_in(key, i)
        for i, name in enumerate(sorted(towers))
    }


def _shape_groups(towers: Towers) -> list[list[str]]:
    """Tower names grouped by row shape: the towers of one group run as one scan over all their
    chunks, so the step holds one copy of the model per shape, not one per tower (a third of
    the program, and of its compile time, for query/positive/negatives of one length)."""
    groups: dict[tuple, list[str]] = {}
    for name in sorted(towers):
        ids, mask = towers[name]
        groups.setdefault((ids.shape[1:], mask.shape[1:]), []).append(name)
    return list(groups.values())


def _group_chunks(towers: Towers, names, keys, *, chunk: int, shards: int):
    """The chunks of `names`' towers, tower after tower: `(ids, mask, keys, chunks per tower)`;
    each chunk keeps the dropout key it has when its tower runs alone."""
    ids = [to_chunks(towers[n][0], shards, chunk) for n in names]
    mask = [to_chunks(towers[n][1], shards, chunk) for n in names]
    counts = [x.shape[0] for x in ids]
    chunk_keys = [_chunk_keys(keys[n], k) for n, k in zip(names, counts, strict=True)]
    keys_c = None if chunk_keys[0] is None else jnp.concatenate(chunk_keys)
    return jnp.concatenate(ids), jnp.concatenate(mask), keys_c, counts


def embed_towers(embed_fn, params, towers: Towers, key, *, chunk: int, shards: int = 1):
    """Embeddings of every tower (queries, positives, negatives, ...), chunked."""
    keys = tower_keys(key, towers)
    out = {}
    for names in _shape_groups(towers):
        ids_c, mask_c, keys_c, counts = _group_chunks(
            towers, names, keys, chunk=chunk, shards=shards
        )
        embedded = _scan_embed(embed_fn, params, ids_c, mask_c, keys_c)
        for name, part in zip(names, jnp.split(embedded, np.cumsum(counts)[:-1]), strict=True):
            out[name] = from_chunks(part, shards)
    return out


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
    """`((loss, aux), grads)` of `loss_fn(embed_towers(params))` by gradient caching; the
    gradients are float32 whatever the dtype of `params`."""
    embeddings = jax.lax.stop_gradient(
        embed_towers(embed_fn, params, towers, key, chunk=chunk, shards=shards)
    )
    (loss, aux), emb_grads = jax.value_and_grad(loss_fn, has_aux=True)(embeddings)
    keys = tower_keys(key, towers)
    grads = None
    for names in _shape_groups(towers):
        ids_c, mask_c, keys_c, _ = _group_chunks(towers, names, keys, chunk=chunk, shards=shards)
        ct_c = jnp.concatenate([to_chunks(emb_grads[n], shards, chunk) for n in names])
        g = _scan_vjp(embed_fn, params, ids_c, mask_c, ct_c, keys_c)
        grads = g if grads is None else jax.tree.map(jnp.add, grads, g)
    return (loss, aux), grads

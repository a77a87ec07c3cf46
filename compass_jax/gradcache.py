"""Gradient caching: contrastive gradients for batches far larger than activation memory.

Pass 1 embeds the batch chunk by chunk with no activations kept; the loss and its gradient with
respect to the embeddings are taken over the whole global batch; pass 2 re-embeds each chunk and
pulls that chunk's embedding gradient back to the parameters with `jax.vjp`, accumulating. Memory
grows with `b x d` (the embeddings) plus one chunk's activations, not with `b x activations`.

Dropout keys are derived from (tower, chunk index) and replayed identically in both passes; a
second pass with different masks would silently compute the gradient of a different function.

Chunks are laid out so every chunk spans all batch shards: a `[n, ...]` array split over `s`
devices is viewed as `[s, k, c, ...]` and chunk `j` is `[:, j]`, so each device embeds `c` of its
own rows per step and no chunk ever lives on a single device; towers whose row count `chunk`
does not divide (packed towers) run in the largest chunk that does (`fit_chunk`). Towers of one
row shape (queries, positives and negatives of one length) run as one scan over all their
chunks, so the program holds one copy of the model per shape rather than per tower.

A tower is a tuple of arrays with rows first (token ids, segment ids, ...): every array is cut
into the same chunks and `embed_fn(params, *arrays, key)` embeds one chunk's rows, returning
`[c, ...]` (one vector per row, or per packed text of a row).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

EmbedFn = Callable[..., Float[Array, "n ..."]]  # (params, *tower arrays, key) -> embeddings
Tower = tuple[Int[Array, "n ..."], ...]
Towers = Mapping[str, Tower]


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


def fit_chunk(rows: Sequence[int], chunk: int, shards: int) -> int:
    """The largest chunk of at most `chunk` rows, a multiple of `shards`, that cuts towers of
    `rows` rows each into whole chunks (packed towers have data-dependent row counts); `chunk`
    itself when it divides them all."""
    top = max(shards, chunk - chunk % shards)
    fits = [c for c in range(top, 0, -shards) if all(n % c == 0 for n in rows)]
    if not fits:
        raise ValueError(f"towers of {list(rows)} rows do not split over {shards} shards")
    return fits[0]


def row_unit(chunk: int | None, shards: int) -> int:
    """Row counts a tower should be a multiple of: a quarter chunk (rounded to whole shards), so
    `fit_chunk` never cuts chunks of fewer than a quarter of `chunk` rows while a packed tower
    wastes at most that many rows."""
    if not chunk:
        return shards
    return max(shards, chunk // 4 // shards * shards)


def _chunk_keys(key: jax.Array | None, k: int):
    return None if key is None else jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(k))


def _scan_embed(embed_fn: EmbedFn, params: Any, tower_c: Tower, keys_c) -> Float[Array, "k c ..."]:
    def body(_, xs):
        arrays, k = xs
        return None, embed_fn(params, *arrays, k)

    return jax.lax.scan(body, None, (tower_c, keys_c))[1]


def _scan_vjp(embed_fn: EmbedFn, params: Any, tower_c: Tower, ct_c, keys_c) -> Any:
    def body(acc, xs):
        arrays, ct, k = xs
        _, pullback = jax.vjp(lambda p: embed_fn(p, *arrays, k), params)
        (grad,) = pullback(ct.astype(jnp.float32))
        return jax.tree.map(lambda a, g: a + g.astype(jnp.float32), acc, grad), None

    # float32 sums whatever the params' dtype (a bf16 copy of the masters sums chunk gradients
    # in float32 all the same).
    zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), params)
    return jax.lax.scan(body, zeros, (tower_c, ct_c, keys_c))[0]


def _tower_chunks(tower: Tower, shards: int, chunk: int) -> Tower:
    return tuple(to_chunks(x, shards, chunk) for x in tower)


def chunked_embed(
    embed_fn: EmbedFn, params: Any, tower: Tower, key: jax.Array | None, *, chunk: int,
    shards: int = 1,
) -> Float[Array, "n ..."]:  # fmt: skip
    """Embeddings of all rows, `chunk` rows at a time (differentiable; under `stop_gradient`
    or outside `grad` no activations are kept)."""
    tower_c = _tower_chunks(tower, shards, chunk)
    keys = _chunk_keys(key, tower_c[0].shape[0])
    return from_chunks(_scan_embed(embed_fn, params, tower_c, keys), shards)


def chunked_vjp(
    embed_fn: EmbedFn, params: Any, tower: Tower, key: jax.Array | None,
    cotangent: Float[Array, "n ..."], *, chunk: int, shards: int = 1,
) -> Any:  # fmt: skip
    """`sum_j vjp(embed(chunk_j))(cotangent_j)`: the param gradient (float32), one chunk live
    at a time."""
    tower_c = _tower_chunks(tower, shards, chunk)
    keys = _chunk_keys(key, tower_c[0].shape[0])
    return _scan_vjp(embed_fn, params, tower_c, to_chunks(cotangent, shards, chunk), keys)


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
        groups.setdefault(tuple(x.shape[1:] for x in towers[name]), []).append(name)
    return list(groups.values())


def _group_chunks(towers: Towers, names, keys, *, chunk: int, shards: int):
    """The chunks of `names`' towers, tower after tower: `(tower chunks, keys, chunks per
    tower)`; each chunk keeps the dropout key it has when its tower runs alone."""
    parts = [_tower_chunks(towers[n], shards, chunk) for n in names]
    counts = [p[0].shape[0] for p in parts]
    chunk_keys = [_chunk_keys(keys[n], k) for n, k in zip(names, counts, strict=True)]
    keys_c = None if chunk_keys[0] is None else jnp.concatenate(chunk_keys)
    tower_c = tuple(jnp.concatenate(arrays) for arrays in zip(*parts, strict=True))
    return tower_c, keys_c, counts


def embed_towers(embed_fn, params, towers: Towers, key, *, chunk: int, shards: int = 1):
    """Embeddings of every tower (queries, positives, negatives, ...), chunked."""
    keys = tower_keys(key, towers)
    out = {}
    for names in _shape_groups(towers):
        c = fit_chunk([towers[n][0].shape[0] for n in names], chunk, shards)
        tower_c, keys_c, counts = _group_chunks(towers, names, keys, chunk=c, shards=shards)
        embedded = _scan_embed(embed_fn, params, tower_c, keys_c)
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
        c = fit_chunk([towers[n][0].shape[0] for n in names], chunk, shards)
        tower_c, keys_c, _ = _group_chunks(towers, names, keys, chunk=c, shards=shards)
        ct_c = jnp.concatenate([to_chunks(emb_grads[n], shards, c) for n in names])
        g = _scan_vjp(embed_fn, params, tower_c, ct_c, keys_c)
        grads = g if grads is None else jax.tree.map(jnp.add, grads, g)
    return (loss, aux), grads

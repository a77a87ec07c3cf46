"""GradCache gradients against full-batch gradients, and dropout replay across its passes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from compass_jax import embedding, models
from compass_jax.config import ModelConfig
from compass_jax.gradcache import (
    chunked_embed,
    chunked_vjp,
    from_chunks,
    gradcache_value_and_grad,
    to_chunks,
    tower_keys,
)
from compass_jax.losses import ContrastiveBatch, LossSettings, cam_infonce

CFG = ModelConfig(
    arch="bert", vocab_size=61, hidden_size=24, num_layers=2, num_heads=4, num_kv_heads=4,
    head_dim=6, intermediate_size=40, max_position_embeddings=32, norm_eps=1e-12,
    hidden_act="gelu", type_vocab_size=2, hidden_dropout=0.1,
)  # fmt: skip
B, L = 16, 10


def _towers(seed=0):
    rng = np.random.default_rng(seed)
    towers = {}
    for name in ("query", "positive"):
        ids = rng.integers(1, CFG.vocab_size, (B, L)).astype(np.int32)
        lengths = rng.integers(3, L + 1, B)
        towers[name] = (ids, (np.arange(L)[None] < lengths[:, None]).astype(np.int32))
    return towers


def _loss_fn(embs):
    b = embs["query"].shape[0]
    batch = ContrastiveBatch(
        query=embs["query"], positive=embs["positive"], negatives=jnp.zeros((b, 0, 24)),
        negative_valid=jnp.zeros((b, 0), bool), label=jnp.arange(b) % 3 - 1,
        negative_label=jnp.zeros((b, 0), jnp.int32), query_hash=jnp.arange(b),
        positive_hash=jnp.arange(b) + 100, negative_hash=jnp.zeros((b, 0), jnp.int32),
    )  # fmt: skip
    return cam_infonce(batch, LossSettings(temperature=0.05))


def _embed_fn(params, ids, mask, key):
    return embedding.embed(CFG, params, ids, mask, pooling="mean", dropout_key=key)


def _max_abs(a, b):
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return max(float(jnp.abs(x - y).max()) for x, y in pairs)


def test_chunk_layout_round_trips_and_spans_shards():
    x = np.arange(48).reshape(24, 2)
    chunks = to_chunks(x, shards=4, chunk=8)
    assert chunks.shape == (3, 8, 2)
    # chunk 0 takes 2 rows from each of the 4 shards of 6 rows
    np.testing.assert_array_equal(chunks[0][:, 0], [0, 2, 12, 14, 24, 26, 36, 38])
    np.testing.assert_array_equal(from_chunks(chunks, 4), x)


def test_gradcache_equals_full_batch_gradient():
    params = models.init(CFG, jax.random.key(0))
    towers = _towers()

    def full(p):
        return _loss_fn({n: _embed_fn(p, i, m, None) for n, (i, m) in towers.items()})

    (ref_loss, _), ref_grads = jax.value_and_grad(full, has_aux=True)(params)
    gc = jax.jit(functools.partial(gradcache_value_and_grad, _embed_fn, _loss_fn, chunk=4))
    (loss, _), grads = gc(params, towers, None)
    np.testing.assert_allclose(loss, ref_loss, atol=1e-6)
    assert _max_abs(grads, ref_grads) < 1e-5
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(ref_grads)) > 1e-3


def test_gradcache_with_dropout_replays_identical_masks():
    """With dropout on, the cached gradient equals differentiating straight through the same
    chunked forward, which holds only if pass 2 re-draws pass 1's masks."""
    params = models.init(CFG, jax.random.key(1))
    towers = _towers(seed=1)
    key = jax.random.key(7)

    def direct(p):
        keys = tower_keys(key, towers)
        embs = {
            n: chunked_embed(_embed_fn, p, i, m, keys[n], chunk=4) for n, (i, m) in towers.items()
        }
        return _loss_fn(embs)

    (_, _), ref_grads = jax.jit(jax.value_and_grad(direct, has_aux=True))(params)
    gc = jax.jit(functools.partial(gradcache_value_and_grad, _embed_fn, _loss_fn, chunk=4))
    (_, _), grads = gc(params, towers, key)
    assert _max_abs(grads, ref_grads) < 1e-5
    # Dropout is really on: other keys give other gradients.
    (_, _), other = gc(params, towers, jax.random.key(8))
    assert _max_abs(other, ref_grads) > 1e-4
    # And a pass 2 with masks different from pass 1 is detectably wrong.
    ids, mask = towers["query"]
    ct = jnp.ones((B, CFG.hidden_size))
    vjp = jax.jit(functools.partial(chunked_vjp, _embed_fn, chunk=4))
    same = vjp(params, ids, mask, key, ct)
    shifted = vjp(params, ids, mask, jax.random.fold_in(key, 1), ct)
    assert _max_abs(same, shifted) > 1e-4


def test_towers_of_several_lengths_and_row_counts_equal_full_batch():
    """Towers are grouped by row shape into shared scans (query apart; positives with the
    negatives, which have twice the rows): the gradient is still the full-batch one."""
    params = models.init(CFG, jax.random.key(2))
    rng = np.random.default_rng(2)

    def tower(rows, length):
        ids = rng.integers(1, CFG.vocab_size, (rows, length)).astype(np.int32)
        lengths = rng.integers(2, length + 1, rows)
        return ids, (np.arange(length)[None] < lengths[:, None]).astype(np.int32)

    towers = {"query": tower(B, L), "positive": tower(B, 6), "negatives": tower(2 * B, 6)}

    def loss_fn(embs):
        b = embs["query"].shape[0]
        negatives = embs["negatives"].reshape(b, 2, -1)
        batch = ContrastiveBatch(
            query=embs["query"], positive=embs["positive"], negatives=negatives,
            negative_valid=jnp.ones((b, 2), bool), label=jnp.full((b,), -1),
            negative_label=jnp.full((b, 2), -1), query_hash=jnp.arange(b),
            positive_hash=jnp.arange(b) + b, negative_hash=jnp.arange(2 * b).reshape(b, 2) + 2 * b,
        )  # fmt: skip
        return cam_infonce(batch, LossSettings(temperature=0.05))

    def full(p):
        return loss_fn({n: _embed_fn(p, i, m, None) for n, (i, m) in towers.items()})

    (ref_loss, _), ref_grads = jax.jit(jax.value_and_grad(full, has_aux=True))(params)
    gc = jax.jit(functools.partial(gradcache_value_and_grad, _embed_fn, loss_fn, chunk=4))
    (loss, _), grads = gc(params, towers, None)
    np.testing.assert_allclose(loss, ref_loss, atol=1e-6)
    assert _max_abs(grads, ref_grads) < 1e-5

"""The speed levers `benchmarks/gpu_suite.py` measures change no result: cuDNN attention's mask
path, matmul kernels cast once per step, a remat policy over the embedding, and XLA options that
really reach the compiler. (cuDNN itself needs a GPU; its mask path is checked here with the XLA
kernel in its place.)"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny import batch, qwen3, randomize, save

from compass_jax import embedding, sharding, train
from compass_jax.config import ConfigError, ModelConfig
from compass_jax.data.batch import TrainBatch
from compass_jax.experiment import TrainConfig
from compass_jax.interop import load_hf


def test_cudnn_attention_path_masks_like_the_default(monkeypatch, tmp_path):
    """The cuDNN branch hands `jax.nn.dot_product_attention` the block-diagonal mask at full
    `[b, 1, l, l]` shape (what the fused kernel takes); run by XLA it must embed as the default
    path (our own core), padding on the left (where a causal row would otherwise see padding)
    or the right."""
    calls = []
    real = jax.nn.dot_product_attention

    def xla_for_cudnn(q, k, v, *args, implementation=None, **kwargs):
        calls.append((implementation, kwargs["mask"].shape))
        return real(q, k, v, *args, implementation=None, **kwargs)

    monkeypatch.setattr(jax.nn, "dot_product_attention", xla_for_cudnn)
    cfg, params = load_hf(save(randomize(qwen3(), seed=11), tmp_path))
    cfg = cfg.replace(dtype="bfloat16")
    for side in ("left", "right"):
        ids, mask = batch(cfg.vocab_size, 0, side, seed=2)
        default = embedding.embed(cfg, params, ids, mask, pooling="last")
        xla = embedding.embed(cfg.replace(attention_impl="xla"), params, ids, mask, pooling="last")
        np.testing.assert_array_equal(np.asarray(xla), np.asarray(default))
        cudnn = embedding.embed(
            cfg.replace(attention_impl="cudnn"), params, ids, mask, pooling="last"
        )
        np.testing.assert_allclose(np.asarray(cudnn), np.asarray(default), atol=1e-6, rtol=0)
    b, length = ids.shape
    assert set(calls) == {("cudnn", (b, 1, length, length))}


def test_cudnn_attention_needs_bfloat16():
    cfg = ModelConfig(
        arch="qwen3", vocab_size=11, hidden_size=8, num_layers=1, num_heads=2, num_kv_heads=1,
        head_dim=4, intermediate_size=8, max_position_embeddings=16, norm_eps=1e-6,
        hidden_act="silu", attention_bias=False, causal=True,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="attention_impl: 'cudnn' needs dtype 'bfloat16'"):
        cfg.replace(attention_impl="cudnn")
    assert cfg.replace(dtype="bfloat16", attention_impl="cudnn").attention_impl == "cudnn"


def _setup(tmp_path, **config):
    cfg, params = load_hf(save(randomize(qwen3(), seed=5), tmp_path))
    train_cfg = TrainConfig(dtype="bfloat16", gradcache_chunk=4, loss_block=(4, 8), **config)
    spec = train.spec_for(train_cfg, cfg, "last", "default")
    mesh = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
    rng = np.random.default_rng(0)
    b, length = 8, 9
    ids = lambda *shape: rng.integers(2, cfg.vocab_size, (b, *shape)).astype(np.int32)
    ones = lambda *shape: np.ones((b, *shape), np.int32)
    data = TrainBatch(
        query_ids=ids(length), query_attention_mask=ones(length), positive_ids=ids(length),
        positive_attention_mask=ones(length), negative_ids=ids(1, length),
        negative_attention_mask=ones(1, length), negative_valid=np.ones((b, 1), bool),
        label=np.full(b, -1, np.int32), negative_label=np.full((b, 1), -1, np.int32),
        query_hash=np.arange(b), positive_hash=np.arange(b) + b,
        negative_hash=np.arange(b)[:, None] + 2 * b,
    )  # fmt: skip
    return spec, mesh, jax.tree.map(jnp.asarray, params), data


def test_cast_once_and_remat_leave_the_gradcache_step_unchanged(tmp_path):
    spec, mesh, params, data = _setup(tmp_path)
    run = jax.jit(lambda s, p: train.loss_and_grads(s, mesh, p, {}, data, None), static_argnums=0)
    (loss, _), grads = run(spec, params)
    scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads))
    assert scale > 1e-4
    for changes in ({"cast_params": True}, {"remat": "dots_with_no_batch_dims_saveable"}):
        (other_loss, _), other = run(dataclasses.replace(spec, **changes), params)
        assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(other)), changes
        np.testing.assert_allclose(float(other_loss), float(loss), rtol=1e-6)
        worst = max(float(jnp.abs(a - b).max()) for a, b in zip(
            jax.tree.leaves(other), jax.tree.leaves(grads), strict=True))  # fmt: skip
        assert worst <= 1e-6 * scale, (changes, worst, scale)  # the same arithmetic (0 on CPU)


def test_xla_options_reach_the_compiler(tmp_path):
    spec, mesh, params, data = _setup(tmp_path, xla_options={"xla_no_such_option": True})
    assert spec.compiler_options == (("xla_no_such_option", True),)
    training = train.TrainSetup(mesh, {"default": spec}, *train.init_state(
        params, spec, mesh, seed=0, min_elements=0))  # fmt: skip
    with pytest.raises(Exception, match="xla_no_such_option"):
        training.compile(spec, jax.tree.map(jnp.asarray, data))

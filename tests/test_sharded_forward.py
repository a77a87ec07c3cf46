"""A forward pass sharded over a ("data", "fsdp") mesh of 8 fake devices equals the
single-device pass."""

import functools

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from compass_jax import embedding, models, sharding, tree
from compass_jax.config import ModelConfig

CFG = ModelConfig(
    arch="qwen3",
    vocab_size=128,
    hidden_size=64,
    num_layers=2,
    num_heads=8,
    num_kv_heads=4,
    head_dim=16,
    intermediate_size=96,
    max_position_embeddings=64,
    norm_eps=1e-6,
    hidden_act="silu",
    attention_bias=False,
    causal=True,
)


def _batch(b=16, length=12, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, CFG.vocab_size, (b, length)).astype(np.int32)
    lengths = rng.integers(2, length + 1, b)
    mask = (np.arange(length)[None, :] >= (length - lengths)[:, None]).astype(np.int32)
    return ids, mask


@pytest.mark.parametrize("data,fsdp", [(2, 4), (8, 1), (1, 8)])
def test_sharded_forward_equals_single_device(data, fsdp):
    assert len(jax.devices()) == 8
    params = models.init(CFG, jax.random.key(0))
    ids, mask = _batch()
    fn = functools.partial(embedding.embed, CFG, pooling="last")
    expected = np.asarray(jax.jit(fn)(params, ids, mask))

    mesh = sharding.make_mesh(data, fsdp)
    p_shard = sharding.param_shardings(params, mesh, min_elements=0)
    b_shard = sharding.batch_sharding(mesh)
    sharded = jax.jit(fn, in_shardings=(p_shard, b_shard, b_shard), out_shardings=b_shard)
    placed = jax.device_put(params, p_shard)
    out = sharded(placed, jax.device_put(ids, b_shard), jax.device_put(mask, b_shard))

    np.testing.assert_allclose(np.asarray(out), expected, atol=2e-6, rtol=0)
    assert out.sharding.spec == PartitionSpec(sharding.BATCH_AXES)
    if fsdp > 1:  # parameters really are split, not silently replicated
        kernel = tree.flatten(placed)["layers.0.mlp.up_proj.kernel"]
        assert kernel.sharding.spec == PartitionSpec(None, "fsdp")
        assert kernel.addressable_shards[0].data.shape == (64, 96 // fsdp)


def test_rules_take_precedence_and_indivisible_leaves_replicate(caplog):
    mesh = sharding.make_mesh(1, 8)
    params = {"a": np.zeros((64, 24)), "b": np.zeros((7, 9)), "c": np.zeros((64,))}
    rules = [(r"^a$", PartitionSpec(None, "fsdp"))]
    with caplog.at_level("INFO"):
        out = sharding.param_shardings(params, mesh, rules, min_elements=0)
    assert out["a"].spec == PartitionSpec(None, "fsdp")
    assert out["b"].spec == PartitionSpec()
    assert out["c"].spec == PartitionSpec("fsdp")
    assert "replicating b" in caplog.text

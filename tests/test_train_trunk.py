"""Locked-trunk training: the step from cached trunk states equals today's full step with the
same frozen layers (loss and gradients, GradCache on, 8 devices); the cache recomputes when the
token ids or the frozen params change; a stopped and resumed locked run equals an uninterrupted
one."""

import dataclasses

import jax
import numpy as np
import pytest
from tiny import bert, qwen3, randomize, save
from train_fixtures import make_model_dir, make_pairs, tiny_config

from compass_jax import models, optim, sharding, train, trainer, tree, trunk
from compass_jax.data.batch import TOWERS, TrainBatch
from compass_jax.experiment import MeshConfig, TrainConfig
from compass_jax.interop import load_hf
from compass_jax.optim import OptimConfig
from compass_jax.resolve import load_model

FROZEN = (r"^embeddings\.", r"^layers\.[01]\.")  # the trunk: embeddings + layers 0, 1 of 3


def _batch(vocab: int, b: int = 16, length: int = 10, g: int = 2, seed: int = 0) -> TrainBatch:
    """Texts of 2..length tokens, right-padded; repeated positives (one text, many rows) and
    empty hard-negative slots, as real batches have."""
    rng = np.random.default_rng(seed)

    def tower(rows):
        ids, mask = np.zeros((rows, length), np.int32), np.zeros((rows, length), np.int32)
        for i, n in enumerate(rng.integers(2, length + 1, rows)):
            ids[i, :n], mask[i, :n] = rng.integers(5, vocab, n), 1
        return ids, mask

    q, qm = tower(b)
    p, pm = tower(b)
    p[b // 2 :], pm[b // 2 :] = p[: b // 2], pm[: b // 2]
    n, nm = tower(b * g)
    valid = rng.random((b, g)) < 0.7
    n, nm = n * valid.reshape(-1, 1), nm * valid.reshape(-1, 1)
    texts = lambda mask: np.where(mask.any(1), np.arange(len(mask)), -1)[:, None].astype(np.int32)
    return TrainBatch(
        query_ids=q, query_segment_ids=qm, query_texts=texts(qm),
        positive_ids=p, positive_segment_ids=pm, positive_texts=texts(pm),
        negative_ids=n, negative_segment_ids=nm, negative_texts=texts(nm),
        negative_valid=valid, label=np.full(b, -1, np.int32),
        negative_label=np.full((b, g), -1, np.int32), query_hash=np.arange(b),
        positive_hash=np.arange(b) % (b // 2) + b,
        negative_hash=np.arange(b * g).reshape(b, g) + 3 * b,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return load_hf(save(randomize(bert(), seed=3), tmp_path_factory.mktemp("bert")))


def _setup(cfg, params, mesh, **changes):
    train_cfg = TrainConfig(
        optim=OptimConfig(learning_rate=1e-3, warmup_steps=0, frozen=FROZEN),
        mesh=MeshConfig(data=2, fsdp=4, min_sharded_elements=0),
        gradcache_chunk=8, loss_block=(4, 16), steps=10, **changes,
    )  # fmt: skip
    return train.setup(train_cfg, cfg, params, pooling="mean", mesh=mesh)


def test_the_trunk_is_detected_from_the_frozen_rules_alone(tiny_bert, tmp_path):
    cfg = tiny_bert[0]
    frozen = lambda *rules: trunk.depth(cfg, OptimConfig(frozen=rules))
    assert frozen(*FROZEN) == 2
    assert frozen(r"^embeddings\.", r"^layers\.0\.") == 1
    assert frozen(r"^embeddings\.", r"^layers\.") is None  # everything frozen: nothing to train
    assert frozen(r"^layers\.[01]\.") is None  # embeddings trained
    assert frozen(r"^embeddings\.", r"^layers\.1\.") is None  # a gap
    assert frozen(r"^embeddings\.", r"^layers\.0\.", r"attn_norm") is None  # more than a trunk
    assert frozen(r"^embeddings\.") is None and frozen() is None
    qwen = load_hf(save(randomize(qwen3(), seed=1), tmp_path))[0]
    assert trunk.depth(qwen, OptimConfig(frozen=(r"^embeddings\.", r"^layers\.[012]\."))) == 3
    not_a_trunk = OptimConfig(frozen=(r"^embeddings\.", r"layers\.0\.", "final_norm"))
    assert trunk.depth(qwen, not_a_trunk) is None


def test_locked_step_equals_the_full_step_on_8_devices(tiny_bert):
    cfg, params = tiny_bert
    mesh = sharding.make_mesh(2, 4)
    training = _setup(cfg, params, mesh)
    locked = training.specs["default"]
    assert locked.trunk == 2 and locked.gradcache_chunk == 8
    full = dataclasses.replace(locked, trunk=None)
    local = _batch(cfg.vocab_size)
    batch = jax.device_put(local, train.batch_shardings(mesh))
    hidden = training.trunk_states(locked, local)
    assert hidden["negatives"].shape == (32, 10, cfg.hidden_size)

    def loss_and_grads(spec, state, batch, hidden):
        trainable, frozen = optim.split_trainable(spec.optim, state["params"])
        return train.loss_and_grads(spec, mesh, trainable, frozen, batch, None, hidden)

    run = jax.jit(loss_and_grads, static_argnums=0)
    (loss, _), grads = run(full, training.state, batch, None)
    (locked_loss, _), locked_grads = run(locked, training.state, batch, hidden)
    np.testing.assert_allclose(float(locked_loss), float(loss), rtol=1e-5)
    flat, locked_flat = tree.flatten(grads), tree.flatten(locked_grads)
    assert set(flat) == set(locked_flat) and all(p.startswith("layers.2.") for p in flat)
    # Empty hard-negative slots pool to zero vectors; their normalisation once made every
    # gradient NaN (the full step's too).
    assert all(np.isfinite(g).all() for g in flat.values()) and not local.negative_valid.all()
    scale = max(float(np.abs(g).max()) for g in flat.values())
    assert scale > 1e-3
    # Float32 rounding only (the trunk ran at other padded lengths): within 1e-5 absolute,
    # and 5e-5 of the largest gradient (measured: 2e-5 of it, 1e-7 absolute).
    for path, g in flat.items():
        np.testing.assert_allclose(locked_flat[path], g, atol=min(1e-5, 5e-5 * scale), err_msg=path)

    # Two whole steps through `TrainSetup` (the second from cache hits) report alike. (Their
    # params are not compared: Adam's first update is about lr * sign(g), so rounding-level
    # gradient differences in near-zero entries move params by a share of the learning rate.)
    other = _setup(cfg, params, mesh)
    for _ in range(2):
        m_full, m_locked = other.run(full, batch), training.run(locked, batch)
        for name in ("loss", "grad_norm", "update_norm", "skipped"):
            np.testing.assert_allclose(float(m_locked[name]), float(m_full[name]), rtol=1e-5)
    assert m_locked["trunk_layers"] == 2 and m_locked["trunk_cache_hits"] > 0


def test_cached_states_are_the_trunks_and_are_recomputed_when_ids_or_params_change(tiny_bert):
    cfg, params = tiny_bert
    k, frozen = 2, tree.flatten(optim.split_trainable(OptimConfig(frozen=FROZEN), params)[1])
    cache = trunk.Cache(2**30)
    locked = trunk.Trunk(cfg, k, frozen, cache)
    local = _batch(cfg.vocab_size)
    ids, mask = local.query_ids, local.query_segment_ids
    states = locked.states({"q": (ids, mask)})["q"]
    # The oracle: the trunk run on the padded tower as it stands.
    direct = np.asarray(models.apply_trunk(cfg, params, ids, mask, k))
    real = mask.astype(bool)
    np.testing.assert_allclose(states[real], direct[real], atol=1e-5)
    assert (states[~real] == 0).all() and cache.misses == len(ids) and cache.hits == 0

    # Two texts packed into one row (segment ids 1, 2) read the same cached states.
    n0, n1 = mask[0].sum(), mask[1].sum()
    packed = np.zeros((1, n0 + n1), np.int32)
    packed[0, :n0], packed[0, n0:] = ids[0, :n0], ids[1, :n1]
    segments = np.array([[1] * n0 + [2] * n1], np.int32)
    again = locked.states({"p": (packed, segments)})["p"][0]
    np.testing.assert_array_equal(again[:n0], states[0, :n0])
    np.testing.assert_array_equal(again[n0:], states[1, :n1])
    assert cache.misses == len(ids) and cache.hits == 2

    changed_ids = ids.copy()
    changed_ids[3, 0] = (changed_ids[3, 0] + 1) % cfg.vocab_size
    misses = cache.misses
    moved = locked.states({"q": (changed_ids, mask)})["q"]
    assert cache.misses == misses + 1  # only the changed text
    assert np.abs(moved[3] - states[3]).max() > 1e-3

    nudged = {**frozen, "layers.1.mlp_norm.bias": frozen["layers.1.mlp_norm.bias"] + 0.1}
    misses = cache.misses
    retrained = trunk.Trunk(cfg, k, nudged, cache).states({"q": (ids, mask)})["q"]
    assert cache.misses == misses + len(ids)  # same ids, other frozen params: all recomputed
    merged = optim.merge_trainable(tree.unflatten(nudged), params)
    direct = np.asarray(models.apply_trunk(cfg, merged, ids, mask, k))
    np.testing.assert_allclose(retrained[real], direct[real], atol=1e-5)
    assert np.abs(retrained - states).max() > 1e-2


def test_a_resumed_locked_run_equals_an_uninterrupted_one(tmp_path):
    model_dir, data = make_model_dir(tmp_path), make_pairs(tmp_path / "pairs.jsonl")
    rules = OptimConfig(learning_rate=3e-3, warmup_steps=0, schedule="constant",
                        frozen=(r"^embeddings\.", r"^layers\.0\."))  # fmt: skip
    assert trunk.depth(load_model(str(model_dir))[0], rules) == 1
    cfg = lambda steps: tiny_config(model_dir, data, optim=rules, steps=steps, dropout=True)
    straight = trainer.run(cfg(6), str(tmp_path / "straight"), progress=False)
    trainer.run(cfg(3), str(tmp_path / "resumed"), progress=False)
    resumed = trainer.run(cfg(6), str(tmp_path / "resumed"), progress=False)
    assert [h["step"] for h in resumed] == [4, 5, 6]
    assert all(h["trunk_layers"] == 1 for h in straight)
    np.testing.assert_array_equal([h["loss"] for h in resumed], [h["loss"] for h in straight[3:]])
    from compass_jax import checkpoint

    _, a, _, _ = checkpoint.load_checkpoint_params(tmp_path / "straight")
    _, b, _, _ = checkpoint.load_checkpoint_params(tmp_path / "resumed")
    for path, value in tree.flatten(a).items():
        np.testing.assert_array_equal(tree.flatten(b)[path], value, err_msg=path)


_TWO_PROCESS_STEP = """
import sys
import jax

port, pid, src, tests = sys.argv[1:5]
sys.path.insert(0, tests)
jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=int(pid))
from test_train_trunk import _batch, _setup
from compass_jax import sharding, train
from compass_jax.interop import load_hf

cfg, params = load_hf(src)
mesh = sharding.make_mesh(2, 4)  # 4 devices per process: each holds half the batch's rows
training = _setup(cfg, params, mesh)
local = _batch(cfg.vocab_size)
batch = jax.tree.map(lambda x: train.place(x, sharding.batch_sharding(mesh)), local)
m = training.run(training.specs["default"], batch, host=local)
print("RESULT", float(m["loss"]), float(m["grad_norm"]), training.trunk_cache.misses, flush=True)
"""


def test_two_processes_each_compute_the_trunk_of_their_own_rows(tmp_path):
    """Multi-host: each process runs the trunk on the texts of the rows its devices hold (not
    the whole global batch), and the step's loss and gradient norm equal one process's."""
    import pathlib

    from processes import run_processes

    src = save(randomize(bert(), seed=3), tmp_path / "bert")
    cfg, params = load_hf(src)
    training = _setup(cfg, params, sharding.make_mesh(2, 4))
    local = _batch(cfg.vocab_size)
    single = training.run(
        training.specs["default"], jax.device_put(local, train.batch_shardings(training.mesh))
    )
    towers = [local.tower(name)[:2] for name in TOWERS]
    whole = len({tuple(t) for ids, seg in towers for t in trunk.texts(ids, seg)})
    script = tmp_path / "step2.py"
    script.write_text(_TWO_PROCESS_STEP)
    logs = run_processes(str(script), [str(src), str(pathlib.Path(__file__).parent)], devices=4)
    results = [line.split()[1:] for log in logs for line in log.splitlines() if "RESULT" in line]
    assert len(results) == 2, logs
    for loss, grad_norm, misses in results:
        np.testing.assert_allclose(float(loss), float(single["loss"]), rtol=1e-5)
        np.testing.assert_allclose(float(grad_norm), float(single["grad_norm"]), rtol=1e-5)
        assert int(misses) < 0.75 * whole  # about half the texts, not all of them
    assert sum(int(m) for _, _, m in results) >= whole

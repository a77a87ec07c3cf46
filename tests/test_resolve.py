"""One resolver for every model argument: a HF directory is itself; a training workdir, a
checkpoint directory and `workdir@step` become one HF directory, written once (bit-exact float32
master weights, the base model's tokenizer and settings), reused, and rewritten when the
checkpoint changes; every command takes them."""

import json
import os

import jax
import numpy as np
import pytest
from test_export import tiny_model_dir

from compass_jax import checkpoint, cli, tree
from compass_jax.interop import load_hf
from compass_jax.interop.st_package import read_settings
from compass_jax.resolve import load_model, resolve_model


def _workdir(root, base, steps):
    """A training workdir with a checkpoint per `steps` entry: `{step: params}` (the base's
    params shifted by the step), as the trainer lays it out."""
    cfg, params = load_hf(base)
    workdir = root / "run"
    workdir.mkdir()
    checkpoint.write_run_info(str(workdir), {"model": str(base)}, str(base), cfg)
    saver = checkpoint.Checkpointer(str(workdir), keep=5)
    saved = {}
    for step in steps:
        saved[step] = jax.tree.map(lambda x, s=step: np.asarray(x + 0.01 * s, np.float32), params)
        saver.save(step, {"params": saved[step], "step": np.int32(step)}, {"position": step})
    saver.close()
    return workdir, saved


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("resolve")
    base = tiny_model_dir("bert", root / "base", seed=5)
    workdir, saved = _workdir(root, base, (2, 4))
    return base, workdir, saved


def _same(a, b):
    fa, fb = tree.flatten(a), tree.flatten(b)
    assert list(fa) == list(fb)
    for path in fa:
        assert np.asarray(fa[path]).tobytes() == np.asarray(fb[path]).tobytes(), path


def test_hf_directories_and_names_resolve_to_themselves(run):
    base, _, _ = run
    assert resolve_model(base) == base
    cfg, params, model_dir = load_model(base)
    assert model_dir == base and cfg.arch == "bert"
    _same(params, load_hf(base)[1])
    with pytest.raises(FileNotFoundError, match="nor a training workdir or workdir@step"):
        resolve_model("no-such-model")


def test_workdir_step_and_checkpoint_dir_become_one_cached_hf_directory(run):
    base, workdir, saved = run
    latest = resolve_model(workdir)
    assert latest.parent == workdir / "hf" and latest.name.startswith("4-")
    assert resolve_model(f"{workdir}@4") == latest
    assert resolve_model(workdir / "checkpoints" / "4") == latest
    step2 = resolve_model(f"{workdir}@2")
    assert step2.name.startswith("2-") and step2 != latest
    # the params are the checkpoint's, bit for bit, with the base's tokenizer and settings
    for step, model_dir in ((4, latest), (2, step2)):
        _, params = load_hf(model_dir)
        _same(params, saved[step])
        _, ckpt, base_dir, _ = checkpoint.load_checkpoint_params(workdir, step)
        _same(params, ckpt)
        assert base_dir == str(base)
    assert read_settings(latest, "bert", default_max_length=1) == read_settings(
        base, "bert", default_max_length=1
    )
    assert (latest / "tokenizer.json").read_bytes() == (base / "tokenizer.json").read_bytes()
    # written once: a second resolve reuses the directory as it is
    stamp = (latest / "model.safetensors").stat().st_mtime_ns
    assert resolve_model(workdir) == latest
    assert (latest / "model.safetensors").stat().st_mtime_ns == stamp


def test_a_rewritten_checkpoint_gets_a_fresh_export(tmp_path):
    base = tiny_model_dir("bert", tmp_path / "base", seed=6)
    workdir, _ = _workdir(tmp_path, base, (3,))
    first = resolve_model(workdir)
    old = checkpoint.fingerprint(str(workdir), 3)
    files = [os.path.join(d, f) for d, _, fs in os.walk(workdir / "checkpoints" / "3") for f in fs]
    os.utime(files[0], ns=(1, 1))  # as when the run is redone
    assert checkpoint.fingerprint(str(workdir), 3) != old
    second = resolve_model(workdir)
    assert second != first and second.is_dir() and not first.exists()


def test_bad_workdir_arguments_name_the_problem(run, tmp_path):
    base, workdir, _ = run
    with pytest.raises(FileNotFoundError, match=r"no checkpoint for step 7 \(steps: \[2, 4\]\)"):
        resolve_model(f"{workdir}@7")
    with pytest.raises(FileNotFoundError, match="is not a training workdir"):
        resolve_model(f"{base}@3")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / checkpoint.RUN_FILE).write_text(json.dumps({"model_dir": str(base)}))
    with pytest.raises(FileNotFoundError, match="has no checkpoint yet"):
        resolve_model(empty)


def test_commands_take_a_workdir_step(run, tmp_path, capsys):
    base, workdir, saved = run
    merged = tmp_path / "merged"
    argv = ["merge", "--models", str(base), f"{workdir}@2", "--t", "1", "--out", str(merged)]
    assert cli.main(argv) == 0
    _same(load_hf(merged)[1], saved[2])  # t = 1 is the second model, bit for bit
    texts = tmp_path / "t.txt"
    texts.write_text("w1 w2\nw3\n")
    out = tmp_path / "e.npy"
    argv = ["embed", "--model", f"{workdir}@2", "--input", str(texts), "--output", str(out)]
    capsys.readouterr()
    assert cli.main(argv) == 0
    assert np.load(out).shape == (2, 48)
    # Every output that reads a workdir names it and its step, never only the base model or
    # the folder the checkpoint was exported to.
    summary = json.loads(capsys.readouterr().out)
    expected = {"model": f"{workdir}@2", "workdir": str(workdir), "step": 2}
    assert expected.items() <= summary["provenance"].items() and summary["model"] == f"{workdir}@2"
    assert summary["provenance"]["path"].startswith(str(workdir / "hf" / "2-"))
    assert cli.main(["eval", "--model", str(workdir), "--suite", "sample", "--out",
                     str(tmp_path / "ev"), "--quiet"]) == 0  # fmt: skip
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    latest = {"model": f"{workdir}@4", "argument": str(workdir), "workdir": str(workdir), "step": 4}
    assert latest.items() <= results["provenance"].items() and results["model"] == f"{workdir}@4"
    markdown = (tmp_path / "ev" / "results.md").read_text()
    assert (
        f"# sample: {workdir}@4" in markdown and f"training workdir `{workdir}`, step 4" in markdown
    )
    assert str(base) not in json.dumps(results) + markdown  # the base model is not credited
    exported = tmp_path / "x"
    assert cli.main(["export", "--model", f"{workdir}/checkpoints/4", "--out", str(exported)]) == 0
    info = json.loads((exported / "export_info.json").read_text())
    assert info["source"] == f"{workdir}@4" and info["source_model"]["step"] == 4
    assert info["source_model"]["workdir"] == str(workdir)

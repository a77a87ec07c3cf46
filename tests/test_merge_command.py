"""`compass-jax merge` on HF directories (random tiny BERTs, no downloads): the output loads in
`transformers` and embeds; it equals the in-memory merge; shards, rules and every method carry
over; errors name what is wrong; peak memory stays near a tensor per input; `merge-sweep`."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from tiny import bert_dir
from transformers import AutoModel, AutoTokenizer, BertConfig

from compass_jax import cli, merge, tree
from compass_jax.encoder import Encoder
from compass_jax.eval import evaluate, load_suite
from compass_jax.interop import load_hf
from compass_jax.interop.safetensors_io import SafetensorsFile, SafetensorsWriter, save_file
from compass_jax.merge import stream
from compass_jax.workflows import merge_sweep
from compass_jax.workflows.merge import merge_checkpoints

TEXTS = ["red shoe for men", "water bottle 1l", "phone case", "baby bag"]


def _model_dir(path, seed, *, shards=None, st_files=False):
    """A random tiny BertModel saved as a HF directory with a WordPiece tokenizer."""
    bert_dir(path, seed, shards=shards)
    if st_files:  # a sentence-transformers package around it, and files that must not follow
        kinds = [("Transformer", ""), ("Pooling", "1_Pooling"), ("Normalize", "2_Normalize")]
        modules = [
            {"idx": i, "name": str(i), "path": p, "type": f"sentence_transformers.models.{k}"}
            for i, (k, p) in enumerate(kinds)
        ]
        (path / "modules.json").write_text(json.dumps(modules))
        (path / "2_Normalize").mkdir()
        (path / "1_Pooling").mkdir()
        (path / "1_Pooling" / "config.json").write_text(
            json.dumps({"word_embedding_dimension": 48, "pooling_mode_mean_tokens": True})
        )
        (path / "README.md").write_text("model card\n")
        (path / "onnx").mkdir()
        (path / "onnx" / "model.onnx").write_bytes(b"first model's weights")
        (path / "pytorch_model.bin").write_bytes(b"stale pickle")
    return path


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "a": _model_dir(root / "a", 0, st_files=True),
        "b": _model_dir(root / "b", 1),
        "c": _model_dir(root / "c", 2),
        "a_sharded": _model_dir(root / "a_sharded", 0, shards="100KB"),
    }


def _params(path):
    return tree.flatten(load_hf(path)[1])


def _assert_params_close(got, want, atol=1e-6):
    assert set(got) == set(want)
    for path in want:
        np.testing.assert_allclose(got[path], np.asarray(want[path]), atol=atol, err_msg=path)


SUBSET = (
    "embeddings.token.embedding",
    "embeddings.norm.scale",
    "layers.0.attn.q_proj.kernel",
    "layers.1.attn.q_proj.kernel",
    "layers.1.mlp_norm.bias",
    "layers.2.mlp.up_proj.kernel",
)


def _subset(params):
    return tree.unflatten({k: v for k, v in tree.flatten(params).items() if k in SUBSET})


def test_merged_directory_loads_in_transformers_and_embeds(dirs, tmp_path, capsys):
    out = tmp_path / "merged"
    assert cli.main(["merge", "--models", str(dirs["a"]), str(dirs["b"]), "--t", "0.3",
                     "--out", str(out)]) == 0  # fmt: skip
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["merged"] == summary["tensors"] == 55 and summary["copied"] == []
    assert summary["not_copied"] == ["model.safetensors", "onnx", "pytorch_model.bin"]

    # the same as the pure function on the loaded params
    a, b = load_hf(dirs["a"])[1], load_hf(dirs["b"])[1]
    _assert_params_close(_params(out), tree.flatten(merge.slerp(a, b, 0.3)))

    model, info = AutoModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    # the pooler, outside the encoder's key table, is merged too, by the default policy
    for key, op in (("pooler.dense.weight", "spherical"), ("pooler.dense.bias", "spherical")):
        x, y = (SafetensorsFile(d / "model.safetensors").read(key) for d in (dirs["a"], dirs["b"]))
        want = merge.merge_two(np.array(x), np.array(y), 0.3, op=op)[0]
        got = dict(model.named_parameters())[key].detach().numpy()
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=key)

    # non-weight files come from the first model; stale or exported weights do not
    names = sorted(os.listdir(out))
    assert names == sorted([
        "1_Pooling", "2_Normalize", "README.md", "config.json", "merge_report.json",
        "model.safetensors", "modules.json", "tokenizer.json", "tokenizer_config.json",
    ])  # fmt: skip
    assert (out / "1_Pooling" / "config.json").read_text() == (
        dirs["a"] / "1_Pooling" / "config.json"
    ).read_text()

    # `compass-jax embed` on the merged directory vs PyTorch mean pooling of the loaded model
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    npy = tmp_path / "emb.npy"
    assert cli.main(["embed", "--model", str(out), "--input", str(src), "--output", str(npy)]) == 0
    ours = np.load(npy)
    tok = AutoTokenizer.from_pretrained(out)(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model.eval()(**tok).last_hidden_state
    mask = tok["attention_mask"][..., None].float()
    ref = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert ours.shape == (4, 48)
    np.testing.assert_allclose(np.sum(ours * ref, axis=1), 1.0, atol=1e-5)

    # t = 0 streams the first model back bit for bit
    zero = tmp_path / "zero"
    assert cli.main(["merge", "--models", str(dirs["a"]), str(dirs["b"]), "--t", "0",
                     "--out", str(zero)]) == 0  # fmt: skip
    first, again = (SafetensorsFile(d / "model.safetensors") for d in (dirs["a"], zero))
    assert sorted(first.names()) == sorted(again.names())
    for key in first.names():
        assert again.read(key).tobytes() == first.read(key).tobytes(), key

    # the report: every key, with the policy, angle and norms of the actual tensors
    report = json.loads((out / "merge_report.json").read_text())
    rows = {r["key"]: r for r in report["report"]}
    assert len(rows) == 55 and report["method"] == "slerp" and report["t"] == 0.3
    assert rows["pooler.dense.weight"]["op"] == "spherical"
    assert rows["pooler.dense.weight"]["path"] == "pooler.dense.weight"
    assert rows["encoder.layer.1.output.LayerNorm.weight"]["op"] == "spherical"  # mergekit mode
    row = rows["encoder.layer.2.intermediate.dense.weight"]
    assert row["path"] == "layers.2.mlp.up_proj.kernel" and row["op"] == "spherical"
    x, y = (
        SafetensorsFile(d / "model.safetensors").read(row["key"]) for d in (dirs["a"], dirs["b"])
    )
    x, y = x.ravel().astype(np.float64), y.ravel().astype(np.float64)
    cos = x @ y / np.linalg.norm(x) / np.linalg.norm(y)
    assert row["angle_deg"] == pytest.approx(np.degrees(np.arccos(cos)), abs=1e-3)
    assert row["norms_in"] == pytest.approx([np.linalg.norm(x), np.linalg.norm(y)], rel=1e-5)
    merged = SafetensorsFile(out / "model.safetensors").read(row["key"])
    assert row["norm_out"] == pytest.approx(np.linalg.norm(merged), rel=1e-5)


def test_tensors_shared_by_several_workers_merge_the_same(dirs, tmp_path, monkeypatch):
    # chunks of 64 elements: every matrix split into 3 ranges written in blocks at their place
    monkeypatch.setattr(stream, "CHUNK", 64)
    out = tmp_path / "split"
    summary = merge_checkpoints([dirs["a"], dirs["b"]], out, t=0.3, workers=3, progress=False)
    assert summary["merged"] == summary["tensors"] == 55
    a, b = load_hf(dirs["a"])[1], load_hf(dirs["b"])[1]
    _assert_params_close(_params(out), tree.flatten(merge.slerp(a, b, 0.3)))
    whole = tmp_path / "whole"
    monkeypatch.setattr(stream, "CHUNK", 1 << 18)
    merge_checkpoints([dirs["a"], dirs["b"]], whole, t=0.3, workers=1, progress=False)
    split, one = (SafetensorsFile(d / "model.safetensors") for d in (out, whole))
    for key in one.names():  # the same to float32 rounding of the inner products' sums
        np.testing.assert_allclose(split.read(key), one.read(key), rtol=1e-6, atol=1e-7)


def test_shards_rules_task_vectors_and_karcher(dirs, tmp_path):
    rules = [[r"layers\.0\.", "keep_b"], [r"attn", [0.2, 0.8]], [r"embeddings\.norm", "spherical"]]
    rules_file = tmp_path / "rules.json"
    rules_file.write_text(json.dumps(rules))
    out = tmp_path / "task"
    argv = ["merge", "--method", "task_slerp", "--base", str(dirs["c"]), "--models",
            str(dirs["a_sharded"]), str(dirs["b"]), "--t", "0.6", "--mode", "geodesic",
            "--rules", str(rules_file), "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    # sharded like the first model: the same shard names and key placement, a new index
    index = json.loads((dirs["a_sharded"] / "model.safetensors.index.json").read_text())
    new_index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 2
    assert new_index["weight_map"] == index["weight_map"]
    assert new_index["metadata"]["total_size"] == sum(
        SafetensorsFile(out / f).nbytes(k) for k, f in new_index["weight_map"].items()
    )
    assert not (out / "model.safetensors").exists()
    _, info = AutoModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]

    # the in-memory oracle on representative leaves (fewer shapes to compile): every rule, the
    # 1-D default, and a layer-2 leaf so that the depth schedule sees all 3 layers
    a, b, c = (_subset(load_hf(dirs[k])[1]) for k in ("a", "b", "c"))
    want = tree.flatten(merge.task_slerp(c, a, b, 0.6, mode="geodesic", rules=rules))
    got = _params(out)
    _assert_params_close({k: got[k] for k in want}, want)
    np.testing.assert_array_equal(got["layers.0.attn.q_proj.kernel"],
                                  tree.flatten(b)["layers.0.attn.q_proj.kernel"])  # fmt: skip

    out = tmp_path / "karcher"
    argv = ["merge", "--method", "karcher", "--models", str(dirs["a"]), str(dirs["b"]),
            str(dirs["c"]), "--weights", "0.5", "0.3", "0.2", "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    want = tree.flatten(merge.karcher_mean([a, b, c], [0.5, 0.3, 0.2]))
    got = _params(out)
    _assert_params_close({k: got[k] for k in want}, want)


def test_errors_name_the_problem_and_keep_existing_output(dirs, tmp_path, capsys):
    def fails(argv, pattern):
        assert cli.main(["merge", *argv]) == 2
        err = capsys.readouterr().err
        assert pattern in err, err

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    a, b = str(dirs["a"]), str(dirs["b"])
    fails(["--models", a, b, "--out", str(out)], "already exists")
    assert (out / "keep.txt").read_text() == "precious"
    fails(["--models", a, b, "--out", a, "--overwrite"], "is an input model")
    fails(["--models", a, b, str(dirs["c"]), "--out", str(tmp_path / "x")],
          "slerp: expected 2 inputs, got 3")  # fmt: skip
    fails(["--method", "task_slerp", "--models", a, b, "--out", str(tmp_path / "x")],
          "--base is required by task_slerp")  # fmt: skip
    bad = tmp_path / "rules.json"
    bad.write_text('[["attn", 0.5], ["mlp", "slurp"]]')
    fails(["--models", a, b, "--rules", str(bad), "--out", str(tmp_path / "x")],
          "rules.json: rule 1: unknown op 'slurp'")  # fmt: skip

    # a tensor of another shape names the param path and both files
    odd = tmp_path / "odd"
    _model_dir(odd, 3)
    path = odd / "model.safetensors"
    tensors = {k: np.array(SafetensorsFile(path).read(k)) for k in SafetensorsFile(path).names()}
    tensors["encoder.layer.1.intermediate.dense.weight"] = np.zeros((72, 47), np.float32)
    save_file(tensors, path)
    fails(["--models", a, str(odd), "--out", str(tmp_path / "x")],
          "layers.1.mlp.up_proj.kernel: shape [72, 47] in")  # fmt: skip
    # a model of another width is refused from its config, before any tensor is read
    cfg = json.loads((odd / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 64}))
    fails(["--models", a, str(odd), "--out", str(tmp_path / "x")], "intermediate_size = 64")
    assert not (tmp_path / "x").exists()  # nothing half-written


# ------------------------------------------------------------------ peak memory

# Peak RSS is read from /proc (VmHWM), not getrusage: Linux carries the forking parent's RSS into
# a child's ru_maxrss across exec, which here would be pytest's few hundred MB.
_CHILD = textwrap.dedent("""
    import json, sys
    import jax.numpy as jnp
    from compass_jax import cli
    import compass_jax.workflows.merge
    def status(field):
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith(field + ":"))
    jnp.zeros(8).block_until_ready()  # the JAX runtime is part of the baseline,
    cli.build_parser()  # and so are the command modules that the parser imports
    figures = {"before": status("VmRSS")}
    if sys.argv[1] == "merge":
        for run in ("cold", "warm"):  # warm: programs compiled, the data's own footprint
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # restart the peak (VmHWM) from the current RSS
            figures[run + "_before"] = status("VmRSS")
            argv = ["merge", "--models", *sys.argv[2:4], "--t", "0.4", "--overwrite",
                    "--out", sys.argv[4]]
            assert cli.main(argv) == 0
            figures[run + "_peak"] = status("VmHWM")
    figures["peak"] = status("VmHWM") if sys.argv[1] != "merge" else figures["cold_peak"]
    print(json.dumps(figures))
""")


def _big_model(path, seed, *, layers=8, hidden=768, inter=3072, vocab=4096):
    """A BERT-base-width checkpoint of random float32 tensors, written a tensor at a time."""
    path.mkdir()
    cfg = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=12, intermediate_size=inter)  # fmt: skip
    cfg.to_json_file(path / "config.json")
    shapes = {
        "embeddings.word_embeddings.weight": (vocab, hidden),
        "embeddings.position_embeddings.weight": (512, hidden),
        "embeddings.token_type_embeddings.weight": (2, hidden),
        "embeddings.LayerNorm.weight": (hidden,),
        "embeddings.LayerNorm.bias": (hidden,),
    }
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value",
                     "attention.output.dense"):  # fmt: skip
            shapes |= {p + name + ".weight": (hidden, hidden), p + name + ".bias": (hidden,)}
        shapes |= {
            p + "intermediate.dense.weight": (inter, hidden),
            p + "intermediate.dense.bias": (inter,),
            p + "output.dense.weight": (hidden, inter),
            p + "output.dense.bias": (hidden,),
        }
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes |= {p + norm + ".weight": (hidden,), p + norm + ".bias": (hidden,)}
    rng = np.random.default_rng(seed)
    specs = [(k, np.float32, s) for k, s in shapes.items()]
    with SafetensorsWriter(path / "model.safetensors", specs, {"format": "pt"}) as writer:
        for key, shape in shapes.items():
            writer.write(key, rng.standard_normal(shape, np.float32))
    return path, sum(4 * int(np.prod(s)) for s in shapes.values()), 4 * inter * hidden


def test_streaming_peak_memory_is_about_a_tensor_per_input(tmp_path):
    a, size, largest = _big_model(tmp_path / "a", 0)
    b, _, _ = _big_model(tmp_path / "b", 1)

    def child(*args):
        env = {**os.environ, "TQDM_DISABLE": "1"}
        done = subprocess.run([sys.executable, "-c", _CHILD, *map(str, args)], env=env,
                              capture_output=True, text=True, check=True)  # fmt: skip
        return json.loads(done.stdout.strip().splitlines()[-1])

    baseline = child("baseline")
    run = child("merge", a, b, tmp_path / "out")
    figures = {
        "model_bytes": size,
        "largest_tensor_bytes": largest,
        "baseline_peak_rss": baseline["peak"],
        "merge_peak_rss": run["cold_peak"],
        "increase_over_baseline": run["cold_peak"] - baseline["peak"],
        "increase_warm": run["warm_peak"] - run["warm_before"],
    }
    print(json.dumps(figures))
    assert (tmp_path / "out" / "model.safetensors").stat().st_size > size
    # Whole models would be 2-3x size. Cold includes compiling the programs (a fixed cost);
    # warm is the streaming itself: a few chunks per input in flight.
    assert figures["increase_over_baseline"] < 0.5 * size, figures
    assert figures["increase_warm"] < 0.25 * size, figures
    assert figures["increase_warm"] < 2 * 2 * largest + 32 * 2**20, figures


# ------------------------------------------------------------------ merge-sweep


def test_sweep_picks_the_best_feasible_t(dirs, tmp_path):
    base, tuned = load_hf(dirs["a"])[1], load_hf(dirs["b"])[1]
    flat = lambda p: np.concatenate([np.ravel(v) for v in tree.flatten(p).values()])
    cos = lambda x, y: float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))
    vb, vt = flat(base), flat(tuned)
    metrics = {"general": lambda d: cos(flat(load_hf(d)[1]), vb),
               "domain": lambda d: cos(flat(load_hf(d)[1]), vt)}  # fmt: skip
    ts = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    objective = merge_sweep.Objective("domain", "general", 0.9)
    result = merge_sweep.sweep(dirs["a"], dirs["b"], ts, metrics, objective,
                               out_dir=tmp_path / "sweep", progress=False)  # fmt: skip

    # the oracle: the same metrics on in-memory merges
    expected = {t: (cos(flat(merge.slerp(base, tuned, t)), vb),
                    cos(flat(merge.slerp(base, tuned, t)), vt)) for t in ts}  # fmt: skip
    feasible = [t for t in ts if expected[t][0] >= 0.9]
    best = max(feasible, key=lambda t: expected[t][1])
    assert 0 < best < 1  # the constraint binds, the objective pulls: a real trade-off
    assert result["best_t"] == best
    for row in result["rows"]:
        assert row["general"] == pytest.approx(expected[row["t"]][0], abs=1e-5)
        assert row["domain"] == pytest.approx(expected[row["t"]][1], abs=1e-5)
    # the best merge is kept, the others are not
    assert result["best_model"] == str(tmp_path / "sweep" / "best")
    report = json.loads((tmp_path / "sweep" / "best" / "merge_report.json").read_text())
    assert report["t"] == best
    assert sorted(os.listdir(tmp_path / "sweep")) == ["best", "sweep.json", "sweep.md", "sweep.png"]


def test_sweep_command_with_the_default_suites(dirs, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert cli.main(["merge-sweep", "--base", str(dirs["a"]), "--tuned", str(dirs["b"]),
                     "--t", "0", "0.5", "--out", str(out)]) == 0  # fmt: skip
    saved = json.loads((out / "sweep.json").read_text())
    printed = capsys.readouterr().out
    assert json.loads(printed.strip().splitlines()[-1])["best_t"] == saved["best_t"]
    assert [r["t"] for r in saved["rows"]] == [0.0, 0.5]
    threshold = saved["objective"]["threshold"]
    assert threshold == pytest.approx(saved["base_metrics"]["general"] * 0.98)
    feasible = [r for r in saved["rows"] if r["general"] >= threshold]
    assert saved["rows"][0]["feasible"]  # t = 0 is the base itself
    assert saved["best_t"] == max(feasible, key=lambda r: (r["domain"], -r["t"]))["t"]
    # the metrics are the suites' averages, as `compass-jax eval` computes them
    base = evaluate(Encoder.load(dirs["a"]), load_suite("general"), progress=False)
    assert saved["rows"][0]["general"] == pytest.approx(base["average"], abs=1e-6)
    for row in saved["rows"]:
        assert 0 <= row["general"] <= 1 and 0 <= row["domain"] <= 1
    table = (out / "sweep.md").read_text()
    assert "| t | domain | general | feasible |" in table and table.count("\n| ") == 3
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "best t" in printed

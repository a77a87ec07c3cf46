"""`compass-jax merge` against mergekit's own SLERP kernel (`mergekit.merge_methods.slerp.slerp`,
the function mergekit's executor calls per tensor) on every tensor of two random tiny BERTs,
pooler included, and on a sentence-transformers model with a `2_Dense` head (merged head, loads
and encodes in sentence-transformers); module weights that cannot be merged copied and reported;
FP8 inputs and non-finite numbers refused with one line; the output's `export_info.json`
describes the merge.

mergekit's full `run_merge` pipeline is not used: in mergekit 0.1.5 it fails on every BERT
config (`plan_tensor` concatenates a list with the tuple of `embeddings.position_ids`'s aliases),
so each tensor goes through the same kernel it would have called."""

import json

import ml_dtypes
import numpy as np
import pytest
import torch
from mergekit.merge_methods.slerp import slerp as mergekit_slerp
from sentence_transformers import SentenceTransformer, models
from tiny import bert_dir
from transformers import AutoModel, AutoTokenizer

from compass_jax import cli, jsonio
from compass_jax.interop import fp8 as fp8_format
from compass_jax.interop.safetensors_io import SafetensorsFile, save_file
from compass_jax.workflows.merge import merge_checkpoints

TEXTS = ["red shoe for men", "water bottle 1l", "phone case", "baby bag"]


def _mergekit(t, a, b):
    """mergekit's SLERP of one tensor: its kernel works on a batch of tensors (axis 0)."""
    a, b = torch.from_numpy(np.array(a))[None], torch.from_numpy(np.array(b))[None]
    return mergekit_slerp(torch.tensor([t]), a, b)[0].numpy()


def _tensors(path):
    st = SafetensorsFile(path)
    return {k: np.array(st.read(k)) for k in st.names()}


def _merge(*argv):
    assert cli.main(["merge", *map(str, argv)]) == 0


def _fails(capsys, *argv) -> str:
    """The one error line of a refused merge (progress bars of the fixtures aside)."""
    capsys.readouterr()
    assert cli.main(["merge", *map(str, argv)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def berts(tmp_path_factory):
    root = tmp_path_factory.mktemp("berts")
    return bert_dir(root / "a", 0), bert_dir(root / "b", 1)


@pytest.mark.parametrize("t", [0.3, 0.8])
def test_slerp_equals_mergekit_on_every_tensor_pooler_included(berts, tmp_path, t, capsys):
    # no rules: --mode mergekit (the default) slerps every tensor, 1-D ones included, as mergekit
    out = tmp_path / "merged"
    _merge("--models", *berts, "--t", t, "--out", out)
    a, b, got = (_tensors(d / "model.safetensors") for d in (*berts, out))
    assert set(got) == set(a) and any(k.startswith("pooler.") for k in got)
    diffs = {k: float(np.abs(got[k] - _mergekit(t, a[k], b[k])).max()) for k in got}
    print(json.dumps({"t": t, "tensors": len(diffs), "max_abs_diff": max(diffs.values())}))
    assert max(diffs.values()) <= 1e-6, sorted(diffs.items(), key=lambda kv: -kv[1])[:3]
    report = json.loads((out / "merge_report.json").read_text())
    assert {r["op"] for r in report["report"]} == {"spherical"} and report["copied"] == []


# ------------------------------------------------------------------ sentence-transformers Dense


def _st_dir(root, seed):
    """A sentence-transformers package: the tiny BERT, mean pooling, a 48 -> 16 Dense head with
    tanh, normalisation; the Dense weights random per seed."""
    torch.manual_seed(seed)
    modules = [
        models.Transformer(str(bert_dir(root / "hf", seed))),
        models.Pooling(48, "mean"),
        models.Dense(48, 16, activation_function=torch.nn.Tanh()),
        models.Normalize(),
    ]
    SentenceTransformer(modules=modules, device="cpu").save(str(root / "st"))
    return root / "st"


def test_dense_head_is_merged_and_the_output_encodes_in_sentence_transformers(tmp_path):
    a, b = _st_dir(tmp_path / "a", 0), _st_dir(tmp_path / "b", 1)
    out = tmp_path / "merged"
    _merge("--models", a, b, "--t", "0.4", "--out", out)
    wa, wb, got = (_tensors(d / "2_Dense" / "model.safetensors") for d in (a, b, out))
    # both by mergekit's SLERP (mergekit mode slerps 1-D tensors too)
    want = _mergekit(0.4, wa["linear.weight"], wb["linear.weight"])
    diff = float(np.abs(got["linear.weight"] - want).max())
    print(json.dumps({"dense_weight_max_abs_diff": diff}))
    np.testing.assert_allclose(got["linear.weight"], want, rtol=0, atol=1e-6)
    want_bias = _mergekit(0.4, wa["linear.bias"], wb["linear.bias"])
    np.testing.assert_allclose(got["linear.bias"], want_bias, rtol=0, atol=1e-6)
    rows = {(r["file"], r["key"]): r for r in jsonio.read_json(out / "merge_report.json")["report"]}
    row = rows["2_Dense/model.safetensors", "linear.weight"]
    assert row["path"] == "2_Dense/linear.weight" and row["op"] == "spherical"

    # sentence-transformers loads the merged head and encodes with it: the oracle is the
    # package's definition run by hand on the merged files (mean pool, dense, tanh, normalise)
    model = SentenceTransformer(str(out), device="cpu")
    emb = model.encode(TEXTS, convert_to_numpy=True)
    tok = AutoTokenizer.from_pretrained(out)(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = AutoModel.from_pretrained(out).eval()(**tok).last_hidden_state
    mask = tok["attention_mask"][..., None].float()
    pooled = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    dense = np.tanh(pooled @ got["linear.weight"].T + got["linear.bias"])
    want = dense / np.linalg.norm(dense, axis=1, keepdims=True)
    assert emb.shape == (4, 16)
    np.testing.assert_allclose(emb, want, atol=2e-5)


def test_module_weights_that_cannot_be_merged_are_copied_and_reported(berts, tmp_path):
    a = _st_dir(tmp_path / "a", 0)
    out = tmp_path / "merged"
    summary = merge_checkpoints([a, berts[1]], out, t=0.4, progress=False)  # b has no modules
    assert summary["merged"] == 55 and len(summary["copied"]) == 2
    assert all(c["file"] == "2_Dense/model.safetensors" and c["why"] == f"not in {berts[1]}"
               for c in summary["copied"])  # fmt: skip
    dense = (a / "2_Dense" / "model.safetensors").read_bytes()
    assert (out / "2_Dense" / "model.safetensors").read_bytes() == dense
    # a module with a pickle only: copied as bytes (never unpickled), and said so
    (a / "2_Dense" / "model.safetensors").unlink()
    (a / "2_Dense" / "pytorch_model.bin").write_bytes(b"a pickle we never open")
    summary = merge_checkpoints([a, berts[1]], tmp_path / "m2", t=0.4, progress=False)
    assert summary["unmerged_weight_files"] == ["2_Dense/pytorch_model.bin"]
    assert (tmp_path / "m2" / "2_Dense" / "pytorch_model.bin").is_file()


# ------------------------------------------------------------------ refusals


def test_fp8_inputs_are_refused_by_name(berts, tmp_path, capsys):
    a = berts[0]
    fp8 = tmp_path / "fp8"
    bert_dir(fp8, 2)
    config = json.loads((fp8 / "config.json").read_text())
    config["quantization_config"] = fp8_format.quantization_config("bert")
    (fp8 / "config.json").write_text(json.dumps(config))
    err = _fails(capsys, "--models", a, fp8, "--out", tmp_path / "x")
    assert f"{fp8}: FP8 checkpoints cannot be merged; merge the bf16/fp32 exports" in err
    # FP8 tensors without the config block: the same message, naming the file
    raw = tmp_path / "raw"
    bert_dir(raw, 3)
    tensors = _tensors(raw / "model.safetensors")
    key = "encoder.layer.0.attention.self.query.weight"
    tensors[key] = tensors[key].astype(ml_dtypes.float8_e4m3fn)
    save_file(tensors, raw / "model.safetensors")
    err = _fails(capsys, "--models", a, raw, "--out", tmp_path / "x")
    assert "model.safetensors: FP8 checkpoints cannot be merged" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "flags,culprit",
    [(["--t", "nan"], "--t"), (["--t", "inf"], "--t"), (["--t", "1e308"], "--t"),
     (["--t", "-3"], "--t"), (["--method", "lerp", "--weights", "nan", "1"], "--weights"),
     (["--method", "karcher", "--weights", "inf", "1"], "--weights"),
     (["--method", "karcher", "--tol", "nan"], "--tol")],
)  # fmt: skip
def test_non_finite_or_out_of_range_numbers_are_refused(berts, tmp_path, capsys, flags, culprit):
    out = tmp_path / "x"
    assert culprit in _fails(capsys, "--models", *berts, *flags, "--out", out)
    assert not out.exists()


def test_non_finite_inputs_or_results_write_nothing(berts, tmp_path, capsys):
    a = berts[0]
    bad = tmp_path / "nan"
    bert_dir(bad, 4)
    tensors = _tensors(bad / "model.safetensors")
    tensors["encoder.layer.2.output.dense.weight"][3, 5] = np.nan
    save_file(tensors, bad / "model.safetensors")
    out = tmp_path / "x"
    err = _fails(capsys, "--models", a, bad, "--out", out)
    assert "model.safetensors: tensor 'encoder.layer.2.output.dense.weight' holds NaN" in err
    assert not out.exists()
    # finite inputs whose extrapolation overflows float32: the result is refused
    huge = tmp_path / "huge"
    bert_dir(huge, 5)
    tensors = _tensors(huge / "model.safetensors")
    tensors["embeddings.LayerNorm.bias"][:] = 3e38
    save_file(tensors, huge / "model.safetensors")
    err = _fails(capsys, "--models", a, huge, "--t", "2", "--out", out)
    assert "LayerNorm.bias (embeddings.norm.bias): the merged tensor is not finite" in err
    assert not out.exists() and not list(tmp_path.glob(".tmp-*"))


def test_export_info_describes_the_merge(berts, tmp_path):
    b = berts[1]
    first = tmp_path / "exported"
    bert_dir(first, 0)
    info = {"exporter": "compass-jax", "source": "somewhere", "arch": "bert", "dtype": "float32",
            "matryoshka_dimensions": [16, 48], "files": ["model.safetensors"]}  # fmt: skip
    (first / "export_info.json").write_text(json.dumps(info))
    out = tmp_path / "merged"
    _merge("--models", first, b, "--t", "0.25", "--out", out)
    got = jsonio.read_json(out / "export_info.json")
    assert got["exporter"] == "compass-jax merge" and got["source"] is None
    assert got["merge"]["method"] == "slerp" and got["merge"]["t"] == 0.25
    assert got["merge"]["models"] == [str(first), str(b)] and got["merge"]["mode"] == "mergekit"
    assert got["matryoshka_dimensions"] is None  # b declares none: the merge cannot promise it
    assert got["files"] == ["model.safetensors"]
    assert got["total_size"] == sum(
        SafetensorsFile(out / "model.safetensors").nbytes(k)
        for k in SafetensorsFile(out / "model.safetensors").names()
    )

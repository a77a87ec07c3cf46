"""FP8 export (compressed-tensors `float-quantized`, llm-compressor FP8_DYNAMIC): the quantiser
against compressed-tensors' own, the checkpoint layout read back with our reader and matched
with compressed-tensors' name matching, loading in transformers with compressed-tensors (CPU),
the JAX W8A8 simulation against that PyTorch oracle, the quality report and gate."""

import json
import shutil

import jax
import ml_dtypes
import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.models import Pooling
from test_export import TEXTS, tiny_model_dir
from transformers import AutoModel, AutoTokenizer

from compass_jax import cli, models, tree
from compass_jax.encoder import Encoder
from compass_jax.fp8_quality import QualityError, load_calibration
from compass_jax.interop import ExportError, fp8, load_hf, save_hf
from compass_jax.interop import safetensors_io as st
from compass_jax.interop.fp8 import simulate_w8a8
from compass_jax.resolve import load_model
from compass_jax.workflows.export import export_params

ct = pytest.importorskip("compressed_tensors")
from compressed_tensors.quantization import (  # noqa: E402
    QuantizationArgs,
    QuantizationConfig,
    preset_name_to_scheme,
)
from compressed_tensors.quantization.lifecycle.forward import quantize  # noqa: E402
from compressed_tensors.quantization.utils import calculate_qparams  # noqa: E402
from compressed_tensors.utils.match import match_quantizable_tensors  # noqa: E402

FP8 = np.dtype(ml_dtypes.float8_e4m3fn)


def distance(encode):
    """An eval callable with a real metric: how far apart two fixed texts embed."""
    a, b = encode(["w5 w6", "w7 w8"], "query")
    return {"distance": float(np.linalg.norm(a - b))}


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Tiny BERT and Qwen3 models with their FP8 exports (no gate: random models)."""
    root = tmp_path_factory.mktemp("fp8")
    out = {}
    for arch in ("bert", "qwen3"):
        src = tiny_model_dir(arch, root / arch, seed=11)
        cfg, params = load_hf(src)
        extra = {"eval_fn": distance} if arch == "qwen3" else {}
        out[arch] = (cfg, params, export_params(cfg, params, root / f"{arch}-fp8",
                                                tokenizer_from=src, fp8=True, min_cosine=None,
                                                **extra))  # fmt: skip
    return out


def test_weight_quantiser_matches_compressed_tensors():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(37, 53, generator=gen) * torch.logspace(-4, 2, 37)[:, None]
    w[5] = 0.0  # an all-zero row gets scale eps, not 0
    args = QuantizationArgs(num_bits=8, type="float", strategy="channel", symmetric=True)
    scale, zero_point = calculate_qparams(w.amin(1, keepdim=True), w.amax(1, keepdim=True), args)
    expected = quantize(w, scale, zero_point, args, dtype=torch.float8_e4m3fn)
    q, ours = fp8.quantize_weight(w.numpy())
    assert q.dtype == FP8 and q.shape == (37, 53) and ours.shape == (37, 1)
    assert ours.dtype == np.float32 and np.array_equal(ours, scale.numpy())
    assert q.view(np.uint8).tobytes() == expected.view(torch.uint8).numpy().tobytes()
    assert np.abs(q.astype(np.float32)).max() == 448.0


@pytest.mark.parametrize("arch", ["bert", "qwen3"])
def test_checkpoint_layout_and_config(arch, exports):
    cfg, params, out = exports[arch]
    f = st.SafetensorsFile(out / "model.safetensors")
    names = f.names()
    fp8_keys = {k for k in names if f.dtype(k) == FP8}
    flat = tree.flatten(params)
    expected = set()
    for path, kernel in flat.items():
        if not fp8.is_block_linear(arch, path):
            continue
        (key,) = [k for k in fp8_keys if k.endswith(_hf_suffix(arch, path))]
        expected.add(key)
        q, scale = fp8.quantize_weight(np.asarray(kernel).T)
        assert f.shape(key) == q.shape == tuple(np.shape(kernel))[::-1]  # [out, in]
        assert np.asarray(f.read(key)).view(np.uint8).tobytes() == q.view(np.uint8).tobytes()
        s = key + "_scale"
        assert f.dtype(s) == np.float32 and f.shape(s) == (q.shape[0], 1)
        assert np.array_equal(f.read(s), scale)
    assert fp8_keys == expected and len(expected) == cfg.num_layers * (7 if arch == "qwen3" else 6)
    scales = {k for k in names if k.endswith("_scale")}
    assert scales == {k + "_scale" for k in expected}  # no input_scale: dynamic activations
    rest = set(names) - fp8_keys - scales
    assert {f.dtype(k) for k in rest} == {np.dtype(ml_dtypes.bfloat16)}

    hf = json.loads((out / "config.json").read_text())
    assert hf["torch_dtype"] == hf["dtype"] == "bfloat16"
    qc = hf["quantization_config"]
    assert (qc["quant_method"], qc["format"], qc["quantization_status"]) == (
        "compressed-tensors", "float-quantized", "compressed",
    )  # fmt: skip
    (group,) = qc["config_groups"].values()
    assert group["targets"] == ["Linear"]
    w, a = group["weights"], group["input_activations"]
    assert {k: w[k] for k in ("num_bits", "type", "strategy", "symmetric", "dynamic")} == {
        "num_bits": 8, "type": "float", "strategy": "channel", "symmetric": True, "dynamic": False,
    }  # fmt: skip
    assert {k: a[k] for k in ("num_bits", "type", "strategy", "symmetric", "dynamic")} == {
        "num_bits": 8, "type": "float", "strategy": "token", "symmetric": True, "dynamic": True,
    }  # fmt: skip
    # compressed-tensors parses it, and the scheme is exactly its FP8_DYNAMIC preset...
    parsed = QuantizationConfig.model_validate(qc)
    preset = preset_name_to_scheme("FP8_DYNAMIC", ["Linear"])
    assert parsed.config_groups["group_0"].weights == preset.weights
    assert parsed.config_groups["group_0"].input_activations == preset.input_activations
    # ...and its name-based matcher (targets "Linear" = every weight, minus `ignore`) picks
    # exactly the FP8 tensors: embeddings, norms and the pooler are covered by `ignore`.
    picked = match_quantizable_tensors(
        dict.fromkeys(names), qc["ignore"], ["Linear"], allow_nonquantizable=True
    )
    assert {name for _, name in picked} == fp8_keys


def _hf_suffix(arch: str, path: str) -> str:
    """`layers.3.attn.q_proj.kernel` -> the HF key of that layer's weight (without prefix)."""
    from compass_jax.interop.keymap import rules_for

    for rule in rules_for(arch):
        if (m := rule.match_path(path)) is not None:
            return rule.hf_key.format(**m)
    raise KeyError(path)


@pytest.mark.parametrize("arch", ["bert", "qwen3"])
def test_transformers_loads_fp8_and_matches_the_jax_w8a8_simulation(arch, exports, tmp_path):
    _, _, out = exports[arch]
    model, info = AutoModel.from_pretrained(
        out, dtype=torch.float32, output_loading_info=True, local_files_only=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    linears = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    quantized = [m for m in linears if getattr(m, "quantization_scheme", None) is not None]
    assert len(quantized) == len(linears) - (arch == "bert")  # all but the ignored pooler
    assert {m.weight.dtype for m in quantized} == {torch.float8_e4m3fn}

    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    enc = tok(TEXTS, padding=True, return_tensors="np")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    with torch.no_grad():  # compressed-tensors: dequantised weights, per-token fake-quant inputs
        theirs = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    theirs = theirs.last_hidden_state.numpy()

    cfg, params = load_hf(out)  # FP8 weights dequantised with their scales
    is_q = lambda path: fp8.is_block_linear(cfg.arch, path)
    apply = lambda p, i, m: models.apply(cfg, p, i, m)
    simulated = np.asarray(jax.jit(simulate_w8a8(apply, is_q))(params, ids, mask))
    weights_only = np.asarray(apply(params, ids, mask))
    valid = mask.astype(bool)
    err_sim = np.abs(simulated - theirs)[valid].max()
    err_weights_only = np.abs(weights_only - theirs)[valid].max()
    # A few activations sit on an E4M3 rounding boundary and may round the other way after a
    # different summation order; everything else agrees to float32 rounding.
    assert err_sim < 0.02 * np.abs(theirs[valid]).max(), err_sim
    assert np.median(np.abs(simulated - theirs)[valid]) < 1e-5
    assert err_weights_only > 5 * err_sim  # the activation quantiser is what makes it match

    # `Encoder.load` on the export serves what vLLM computes: the same W8A8 simulation, pooled.
    encoder = Encoder.load(out)
    assert encoder.fp8 == {p for p in tree.flatten(params) if is_q(p)}
    ours = encoder.encode(TEXTS)
    pooling = Pooling.load(str(out / "1_Pooling"))  # sentence-transformers pools theirs
    features = {"token_embeddings": torch.tensor(theirs), "attention_mask": torch.tensor(mask)}
    reference = pooling(features)["sentence_embedding"].numpy()
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    cosine = np.sum(ours * reference, axis=1)
    assert cosine.min() > 0.999, cosine
    plain = Encoder.load(out)
    plain.fp8 = None  # weights-only: what the FP8 activations change
    assert np.abs(plain.encode(TEXTS) - ours).max() > 1e-4


@pytest.mark.parametrize("arch", ["bert", "qwen3"])
def test_sentence_transformers_encodes_the_fp8_export_on_cpu(arch, exports):
    # sentence-transformers calls the model's `forward` directly, skipping compressed-tensors'
    # decompress-on-first-call hook; the export's sentence_bert_config.json has it load the
    # weights dequantised instead (FP8 values times their scales), whatever the device.
    _, _, out = exports[arch]
    settings = json.loads((out / "sentence_bert_config.json").read_text())
    assert settings["config_kwargs"]["quantization_config"]["dequantize"] is True
    model = SentenceTransformer(str(out), device="cpu", local_files_only=True,
                                model_kwargs={"dtype": torch.float32})  # fmt: skip
    theirs = model.encode(TEXTS, prompt_name="query")
    plain = Encoder.load(out)  # the same dequantised weights, in JAX
    plain.fp8 = None  # no activation rounding
    ours = plain.encode(TEXTS, prompt="query")
    np.testing.assert_allclose(theirs, ours, atol=2e-5)
    # bf16, as a user gets it by default, runs too
    default = SentenceTransformer(str(out), device="cpu", local_files_only=True)
    cosine = np.sum(default.encode(TEXTS, prompt_name="query") * ours, axis=1)
    assert cosine.min() > 0.99, cosine
    # transformers' AutoModel keeps reading config.json alone: FP8 weights, W8A8 on first call
    auto = AutoModel.from_pretrained(out, local_files_only=True)
    assert auto.get_input_embeddings() is not None
    assert any(p.dtype == torch.float8_e4m3fn for p in auto.parameters())


def test_only_the_fp8_scheme_loads(exports, tmp_path):
    _, _, out = exports["bert"]
    other = tmp_path / "int8"
    shutil.copytree(out, other)
    hf = json.loads((other / "config.json").read_text())
    hf["quantization_config"]["config_groups"]["group_0"]["weights"]["type"] = "int"
    (other / "config.json").write_text(json.dumps(hf))
    with pytest.raises(ValueError, match=r"config_groups.group_0.weights.type is 'int'"):
        load_hf(other)


def test_simulation_is_exact_on_a_small_mlp_and_refuses_other_uses():
    rng = np.random.default_rng(0)
    params = {"a": {"kernel": rng.normal(size=(16, 24)).astype(np.float32)},
              "b": {"kernel": rng.normal(size=(24, 8)).astype(np.float32)},
              "bias": rng.normal(size=(8,)).astype(np.float32)}  # fmt: skip
    # tokens of very different magnitudes: the scale must be per token
    x = (rng.normal(size=(3, 5, 16)) * 10.0 ** rng.integers(-3, 3, size=(3, 5, 1))).astype(
        np.float32
    )

    def mlp(p, x):
        h = jax.nn.gelu(x @ p["a"]["kernel"])
        return jax.numpy.einsum("blf,fo->blo", h, p["b"]["kernel"]) + p["bias"]

    quantized = lambda path: path.endswith("kernel")
    got = jax.jit(simulate_w8a8(mlp, quantized))(params, x)

    @jax.jit
    def by_hand(p, x):
        h = jax.nn.gelu(fp8.fake_quantize_tokens(x) @ p["a"]["kernel"])
        return fp8.fake_quantize_tokens(h) @ p["b"]["kernel"] + p["bias"]

    np.testing.assert_array_equal(np.asarray(got), np.asarray(by_hand(params, x)))
    assert not np.allclose(got, jax.jit(mlp)(params, x), rtol=1e-3)

    with pytest.raises(ValueError, match="feeds 'reduce_sum'"):
        simulate_w8a8(lambda p, x: x @ p["a"]["kernel"] + p["a"]["kernel"].sum(), quantized)(
            params, x
        )
    with pytest.raises(ValueError, match="never reach a matmul"):
        simulate_w8a8(lambda p, x: x @ p["a"]["kernel"], quantized)(params, x)


def test_quality_gate_failure_leaves_nothing(exports, tmp_path, capsys):
    cfg, params, _ = exports["bert"]
    src = tmp_path / "src"
    tiny_model_dir("bert", src, seed=11)
    with pytest.raises(ExportError, match="bfloat16"):
        export_params(cfg, params, tmp_path / "f32", tokenizer_from=src, fp8=True, dtype="float32")
    with pytest.raises(ExportError, match="bfloat16"):
        save_hf(cfg, params, tmp_path / "f32", tokenizer_from=src, fp8=True, dtype="float32")
    with pytest.raises(QualityError, match=r"en: 0\.99"):
        export_params(cfg, params, tmp_path / "gated", tokenizer_from=src, fp8=True,
                      min_cosine=0.99999)  # fmt: skip
    assert not (tmp_path / "gated").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    args = ["export", "--model", str(src), "--out", str(tmp_path / "cli"), "--fp8"]
    assert cli.main([*args, "--min-cosine", "0.99999"]) == 2
    assert "quality gate" in capsys.readouterr().err and not (tmp_path / "cli").exists()
    assert cli.main([*args, "--no-quality-gate"]) == 0
    report = json.loads((tmp_path / "cli" / "fp8_report.json").read_text())
    assert report["min_cosine"] is None
    assert 0.99 < report["cosine"]["all"]["mean"] < 0.99999  # why the gate above failed


def test_save_hf_writes_the_report_it_is_given(exports, tmp_path):
    cfg, params, out = exports["bert"]
    report = json.loads((out / "fp8_report.json").read_text())
    src = tmp_path / "src"
    tiny_model_dir("bert", src, seed=11)
    given = save_hf(cfg, params, tmp_path / "given", tokenizer_from=src, fp8=True,
                    fp8_report=report)  # fmt: skip
    assert json.loads((given / "fp8_report.json").read_text()) == report
    assert "FP8 quality" in (given / "README.md").read_text()
    bare = save_hf(cfg, params, tmp_path / "bare", tokenizer_from=src, fp8=True)
    assert not (bare / "fp8_report.json").exists()
    assert (bare / "model.safetensors").read_bytes() == (given / "model.safetensors").read_bytes()
    with pytest.raises(ExportError, match="without fp8"):
        save_hf(cfg, params, tmp_path / "x", tokenizer_from=src, fp8_report=report)


def test_report_has_eval_deltas_and_weight_errors(exports):
    _, _, out = exports["qwen3"]
    report = json.loads((out / "fp8_report.json").read_text())
    ev = report["eval"]
    delta = ev["fp8"]["distance"] - ev["reference"]["distance"]
    assert ev["delta"]["distance"] == pytest.approx(delta) and delta != 0.0
    errors = report["weights"]["relative_frobenius_error"]
    assert sorted(errors, key=int) == ["0", "1", "2"] and len(errors["0"]) == 7
    # E4M3 keeps 3 mantissa bits: a relative error of a few percent on Gaussian weights.
    assert all(0.01 < e < 0.05 for row in errors.values() for e in row.values())
    assert report["weights"]["max"] == max(e for row in errors.values() for e in row.values())
    langs = sorted({r["lang"] for r in load_calibration()})
    assert sorted(report["cosine"]["per_language"]) == langs
    assert all(s["n"] == 12 and s["min"] <= s["p1"] <= s["mean"] <= 1.0
               for s in report["cosine"]["per_language"].values())  # fmt: skip
    md = (out / "fp8_report.md").read_text()
    assert "| distance |" in md and "| en | 12 |" in md
    assert "FP8 quality" in (out / "README.md").read_text()


def test_default_model_fp8(tmp_path):
    """The default multilingual model: FP8 agreement per language (JAX report and the
    PyTorch / compressed-tensors load of the written files), and the size of the block weights."""
    cfg, params, source = load_model("multilingual-e5-small")
    out = export_params(cfg, params, tmp_path / "e5-fp8", tokenizer_from=source, fp8=True)
    report = json.loads((out / "fp8_report.json").read_text())
    per_lang = report["cosine"]["per_language"]
    print("\nJAX W8A8 vs bf16:", {k: round(v["mean"], 5) for k, v in per_lang.items()})
    assert sorted(per_lang) == ["en", "id", "ms", "pt", "th", "tl", "vi"]
    assert all(s["mean"] >= 0.99 and s["min"] >= 0.98 for s in per_lang.values())

    f = st.SafetensorsFile(out / "model.safetensors")
    fp8_bytes = sum(f.nbytes(k) + f.nbytes(k + "_scale") for k in f.names() if f.dtype(k) == FP8)
    bf16_bytes = sum(2 * int(np.prod(f.shape(k))) for k in f.names() if f.dtype(k) == FP8)
    assert fp8_bytes <= 0.55 * bf16_bytes

    records = load_calibration()
    texts = [f"query: {r['query']}" for r in records] + [f"passage: {r['title']}" for r in records]
    langs = np.array([r["lang"] for r in records] * 2)
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    enc = tok(texts, padding=True, return_tensors="pt")

    def embed(model):
        with torch.no_grad():
            hidden = model(**enc).last_hidden_state
        m = enc["attention_mask"][..., None].float()
        v = ((hidden * m).sum(1) / m.sum(1)).numpy()
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    # float32 compute on both sides (PyTorch's bf16 CPU path is slow): the FP8 files as
    # compressed-tensors runs them (dequantised weights, per-token E4M3 inputs) against the
    # weights rounded to bf16.
    served = AutoModel.from_pretrained(out, dtype=torch.float32, local_files_only=True)
    bf16 = AutoModel.from_pretrained(source, dtype=torch.bfloat16, local_files_only=True).float()
    cosine = np.sum(embed(served) * embed(bf16), axis=1)
    torch_means = {lang: float(cosine[langs == lang].mean()) for lang in per_lang}
    print("torch FP8 vs bf16:", {k: round(v, 5) for k, v in torch_means.items()})
    assert min(torch_means.values()) >= 0.99
    for lang, mean in torch_means.items():  # the JAX simulation predicts the served quality
        assert abs(mean - per_lang[lang]["mean"]) < 3e-3, lang

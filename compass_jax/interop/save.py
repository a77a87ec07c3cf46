"""`save_hf`: params -> a Hugging Face + sentence-transformers directory (bf16 | fp32 | FP8).

The key table of `load_hf` runs in reverse (`Rule.match_path`, `relayout`), so an export loads
back bit for bit. The directory is complete or absent: it is built under a temporary name beside
the target and renamed into place (`atomic_dir`); an existing target is replaced only by a
complete export, and only with `overwrite`.

Multi-host: call `save_hf` on every process, as any other step of a multi-host program. Each
param is read tensor by tensor: a fully addressable array directly, a replicated one from its
local copy, any other through `process_allgather` (a collective, so every process walks the
tensors in the same order); only process 0 writes and the others return None. An FP8 export
gathers every param to host memory on every process first, because each process evaluates the
quality gate itself (the same numbers everywhere, so all processes fail or pass together).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import os
import pathlib
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import ml_dtypes
import numpy as np
from jax.experimental import multihost_utils

from compass_jax import models, tree
from compass_jax.atomic import atomic_dir
from compass_jax.config import ModelConfig, to_hf
from compass_jax.embedding import POOLINGS
from compass_jax.interop import fp8 as fp8_format
from compass_jax.interop import safetensors_io
from compass_jax.interop.keymap import LINEAR, PREFIXES, relayout, rules_for
from compass_jax.interop.st_package import (
    EmbedderSettings,
    model_card,
    read_settings,
    write_settings,
)
from compass_jax.interop.tokenizer import load_tokenizer

DTYPES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float32": "float32", "fp32": "float32"}
_NP_DTYPES = {"bfloat16": np.dtype(ml_dtypes.bfloat16), "float32": np.dtype(np.float32)}
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.txt", "vocab.json", "merges.txt", "sentencepiece.bpe.model", "spiece.model",
    "tokenizer.model", "chat_template.jinja",
)  # fmt: skip
EXPORT_INFO = "export_info.json"
_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_SIZE_UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


class ExportError(ValueError):
    """An export that cannot be written; the message names the path, param or field."""


@dataclasses.dataclass(frozen=True)
class _Unit:
    """One param (or the placeholder pooler) and the tensors it becomes in the checkpoint."""

    path: str | None
    transform: str
    tensors: tuple[tuple[str, tuple[int, ...], np.dtype], ...]
    fp8: bool = False

    @property
    def nbytes(self) -> int:
        return sum(int(np.prod(s, dtype=np.int64)) * d.itemsize for _, s, d in self.tensors)


def parse_size(size: int | str) -> int:
    """`5GB` (10^9), `500MiB` (2^20), or a byte count."""
    if isinstance(size, int):
        if size <= 0:
            raise ExportError(f"max_shard_size: must be positive, got {size}")
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", str(size), re.IGNORECASE)
    if not m or float(m.group(1)) <= 0:
        raise ExportError(f"max_shard_size: cannot read {size!r} (examples: 5GB, 500MiB)")
    return int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").upper()])


def _host(leaf: Any) -> np.ndarray:
    """The full value of `leaf` as float32 on this host, never touching a remote shard."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        if leaf.is_fully_replicated:
            leaf = leaf.addressable_data(0)
        else:
            leaf = multihost_utils.process_allgather(leaf, tiled=True)
    return np.asarray(leaf, np.float32)


def _flat_params(cfg: ModelConfig, params: Mapping[str, Any]) -> dict[str, Any]:
    """`params` flattened in the skeleton's order, with every mismatch reported together."""
    skeleton = tree.flatten(models.abstract_params(cfg))
    flat = tree.flatten(params)
    problems = [f"missing param {p!r}" for p in skeleton if p not in flat]
    problems += [f"unexpected param {p!r}" for p in flat if p not in skeleton]
    problems += [
        f"param {p!r}: shape {tuple(np.shape(flat[p]))}, expected {tuple(s.shape)}"
        for p, s in skeleton.items()
        if p in flat and tuple(np.shape(flat[p])) != tuple(s.shape)
    ]
    if problems:
        raise ExportError(f"params do not fit the {cfg.arch} config: " + "; ".join(problems))
    return {p: flat[p] for p in skeleton}


def _plan(cfg: ModelConfig, flat: Mapping[str, Any], dtype: str, fp8: bool) -> list[_Unit]:
    """The checkpoint tensors, from the key table run in reverse."""
    rules = rules_for(cfg.arch, attention_bias=cfg.attention_bias)
    # Qwen3 keys carry the `model.` prefix of the declared Qwen3ForCausalLM; base-model loaders
    # (transformers' Qwen3Model, vLLM's pooling adapter, load_hf) strip it.
    prefix = PREFIXES[cfg.arch][0] if cfg.arch == "qwen3" else ""
    out_dtype = _NP_DTYPES[dtype]
    units = []
    for path, leaf in flat.items():
        hits = [(r, m) for r in rules if (m := r.match_path(path)) is not None]
        if len(hits) != 1:
            raise ExportError(f"param {path!r} matches {len(hits)} rules of the {cfg.arch} table")
        rule, groups = hits[0]
        key = prefix + rule.hf_key.format(**groups)
        shape = tuple(np.shape(leaf))
        shape = shape[::-1] if rule.transform == LINEAR else shape
        if fp8 and fp8_format.is_block_linear(cfg.arch, path, attention_bias=cfg.attention_bias):
            scale = (key + fp8_format.SCALE_SUFFIX, (shape[0], 1), np.dtype(np.float32))
            tensors = ((key, shape, fp8_format.FP8_DTYPE), scale)
            units.append(_Unit(path, rule.transform, tensors, fp8=True))
        else:
            units.append(_Unit(path, rule.transform, ((key, shape, out_dtype),)))
    if cfg.arch in ("bert", "xlm-roberta"):
        # transformers' BertModel/XLMRobertaModel build a CLS pooler that embedders never use;
        # zeros keep AutoModel from reporting newly initialised weights.
        d = cfg.hidden_size
        placeholder = (("pooler.dense.weight", (d, d), out_dtype),)
        placeholder += (("pooler.dense.bias", (d,), out_dtype),)
        units.append(_Unit(None, "copy", placeholder))
    if fp8:
        weights = {u.tensors[0][0]: u.fp8 for u in units if u.tensors[0][0].endswith(".weight")}
        fp8_format.check_ignore(cfg.arch, weights)
    return units


def _produce(unit: _Unit, value: np.ndarray | None) -> dict[str, np.ndarray]:
    if unit.path is None:
        return {k: np.zeros(s, d) for k, s, d in unit.tensors}
    array = relayout(unit.transform, value)
    if unit.fp8:
        q, scale = fp8_format.quantize_weight(array)
        return {unit.tensors[0][0]: q, unit.tensors[1][0]: scale}
    ((key, _, dtype),) = unit.tensors
    return {key: np.ascontiguousarray(array).astype(dtype)}


def _shards(units: list[_Unit], max_bytes: int) -> list[list[_Unit]]:
    """Consecutive units packed greedily; a unit larger than the limit gets a shard alone."""
    shards: list[list[_Unit]] = [[]]
    size = 0
    for unit in units:
        if shards[-1] and size + unit.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(unit)
        size += unit.nbytes
    return shards


def _max_tokens(cfg: ModelConfig, source: pathlib.Path) -> int:
    """The longest input: the position table, or the tokenizer's `model_max_length` if less.
    Read from the JSON, so that a bf16 export never imports the tokenizer stack."""
    positions = cfg.max_position_embeddings
    if cfg.arch == "xlm-roberta":  # positions start after padding_idx
        positions -= (cfg.pad_token_id if cfg.pad_token_id is not None else 1) + 1
    path = source / "tokenizer_config.json"
    if not path.is_file():
        return positions
    try:
        limit = json.loads(path.read_text(encoding="utf-8")).get("model_max_length")
    except json.JSONDecodeError as e:
        raise ExportError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None
    return int(min(positions, limit)) if isinstance(limit, int | float) and limit > 0 else positions


def _versions() -> dict[str, str]:
    names = {"compass_jax": "compass-jax", "transformers": "transformers"}
    names |= {"sentence_transformers": "sentence-transformers", "pytorch": "torch"}
    found = {}
    for key, dist in names.items():
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[key] = importlib.metadata.version(dist)
    return found


def _write_json(path: str, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")


def save_hf(
    cfg: ModelConfig,
    params: Mapping[str, Any],
    out_dir: str | os.PathLike,
    *,
    tokenizer_from: str | os.PathLike,
    dtype: str = "bfloat16",
    fp8: bool = False,
    prompts: Mapping[str, str] | None = None,
    pooling: str | None = None,
    normalize: bool | None = True,
    max_seq_length: int | None = None,
    max_shard_size: int | str = "5GB",
    matryoshka_dims: Sequence[int] | None = None,
    evaluation: Mapping[str, Any] | None = None,
    min_cosine: float | None = 0.99,
    calibration: Sequence[dict] | None = None,
    eval_fn: Callable | None = None,
    model_name: str | None = None,
    overwrite: bool = False,
) -> pathlib.Path | None:
    """Write `params` as a HF + sentence-transformers directory at `out_dir`.

    `tokenizer_from`: the directory whose tokenizer files are copied and whose
    sentence-transformers settings are the defaults for `prompts`, `pooling`, `normalize`
    (None: keep the source's) and `max_seq_length`. `dtype`: of every weight ("bfloat16" |
    "float32"); with `fp8` (bfloat16 only) the block linears are E4M3 (compressed-tensors
    `float-quantized`), an `fp8_report.json`/`.md` is written beside them, and the export
    fails (nothing written) when the mean cosine of a calibration language (`calibration`,
    default the bundled sample) falls below `min_cosine` (None: no gate). `evaluation`: numbers
    for the model card; `eval_fn(encode) -> {metric: value}` adds metric deltas to the FP8
    report. Returns the directory (None on processes other than 0).
    """
    if dtype not in DTYPES:
        raise ExportError(f"dtype: expected one of {sorted(DTYPES)}, got {dtype!r}")
    dtype = DTYPES[dtype]
    if fp8 and dtype != "bfloat16":
        raise ExportError(
            f"dtype {dtype} with fp8: an FP8 export keeps its other weights in bfloat16 "
            "(vLLM's FP8 kernels take bf16/fp16 activations)"
        )
    out = pathlib.Path(out_dir).absolute()
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass overwrite / --overwrite to replace)")
    source = pathlib.Path(tokenizer_from)
    if not source.is_dir():
        raise FileNotFoundError(f"tokenizer_from {source}: not a directory")
    flat = _flat_params(cfg, params)
    units = _plan(cfg, flat, dtype, fp8)
    shards = _shards(units, parse_size(max_shard_size))
    limit = _max_tokens(cfg, source)
    found = read_settings(source, cfg.arch, default_max_length=limit)
    settings = EmbedderSettings(
        pooling=pooling or found.pooling,
        normalize=found.normalize if normalize is None else bool(normalize),
        max_length=int(max_seq_length or found.max_length),
        prompts=dict(found.prompts if prompts is None else prompts),
        default_prompt_name=found.default_prompt_name,
    )
    if settings.pooling not in POOLINGS:
        raise ExportError(f"pooling: expected one of {POOLINGS}, got {settings.pooling!r}")
    if not 0 < settings.max_length <= limit:
        raise ExportError(f"max_seq_length {settings.max_length}: the model takes 1..{limit}")
    dims = sorted({int(d) for d in matryoshka_dims or ()})
    if any(not 0 < d <= cfg.hidden_size for d in dims):
        raise ExportError(f"matryoshka_dims {dims}: each must be in 1..{cfg.hidden_size}")

    cache: dict[str, np.ndarray] | None = None
    report = None
    if fp8:
        from compass_jax import fp8_quality  # imports the encoder, which imports interop

        cache = {p: _host(v) for p, v in flat.items()}
        report = fp8_quality.quality_report(
            cfg, tree.unflatten(cache), load_tokenizer(source), settings,
            dtype=dtype, records=calibration, eval_fn=eval_fn,
        )  # fmt: skip
        report["min_cosine"] = min_cosine
        if min_cosine is not None:
            fp8_quality.check(report, min_cosine)

    names = (
        ["model.safetensors"]
        if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    writer = jax.process_index() == 0
    try:
        if not writer:
            _write_shards(shards, names, flat, cache, None)
            return None
        with atomic_dir(out, overwrite=overwrite) as tmp:
            weight_map = _write_shards(shards, names, flat, cache, tmp)
            _write_rest(
                tmp, cfg, dtype, fp8, source, settings, weight_map, names, units, dims,
                report, evaluation, model_name,
            )  # fmt: skip
    except OSError as e:
        if isinstance(e, FileExistsError) and out.exists() and not overwrite:
            raise  # the target appeared meanwhile; it is left as it is
        raise ExportError(f"{out}: cannot write the export: {e}") from e
    return out


def _write_shards(shards, names, flat, cache, tmp) -> dict[str, str]:
    """Write the shards (process 0, `tmp` set; one shard in memory at a time), or only take
    part in the gathers (the other processes).

    Gathers are collectives, so every process runs all of them whatever happens to the writer;
    after each shard process 0 broadcasts whether it succeeded, so that a failed write stops
    every process instead of leaving the others waiting at the next gather.
    """
    weight_map: dict[str, str] = {}
    for shard, name in zip(shards, names, strict=True):
        tensors: dict[str, np.ndarray] = {}
        failure: Exception | None = None
        for unit in shard:
            value = None
            if unit.path is not None:
                value = cache[unit.path] if cache is not None else _host(flat[unit.path])
            if tmp is not None and failure is None:
                try:
                    tensors.update(_produce(unit, value))
                except Exception as e:
                    failure = e
        if tmp is not None and failure is None:
            try:
                safetensors_io.save_file(tensors, os.path.join(tmp, name), {"format": "pt"})
            except Exception as e:
                failure = e
        weight_map.update(dict.fromkeys(tensors, name))
        if jax.process_count() > 1:
            ok = multihost_utils.broadcast_one_to_all(np.int32(failure is None))
            if not int(ok) and failure is None:
                raise ExportError("process 0 failed writing the export; see its log")
        if failure is not None:
            raise failure
    return weight_map


def _write_rest(
    tmp, cfg, dtype, fp8, source, settings, weight_map, names, units, dims, report, evaluation,
    model_name,
) -> None:  # fmt: skip
    from compass_jax import fp8_quality
    from compass_jax.commands.serve_command import invocation

    total = sum(u.nbytes for u in units)
    if len(names) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        _write_json(os.path.join(tmp, "model.safetensors.index.json"), index)
    hf = {**to_hf(cfg), "torch_dtype": dtype, "dtype": dtype}
    if fp8:
        hf["quantization_config"] = fp8_format.quantization_config(cfg.arch)
    _write_json(os.path.join(tmp, "config.json"), hf)
    copied = [n for n in TOKENIZER_FILES if (source / n).is_file()]
    if not copied:
        raise ExportError(f"tokenizer_from {source}: no tokenizer files ({TOKENIZER_FILES})")
    for name in copied:
        shutil.copyfile(source / name, os.path.join(tmp, name))
    write_settings(tmp, settings, hidden_size=cfg.hidden_size, versions=_versions())
    if report is not None:
        fp8_quality.write_report(report, tmp)
    info = {
        "exporter": "compass-jax",
        "version": _versions().get("compass_jax"),
        "source": model_name,
        "arch": cfg.arch,
        "dtype": dtype,
        "fp8": "compressed-tensors float-quantized FP8_DYNAMIC" if fp8 else None,
        "matryoshka_dimensions": dims or None,
        "total_size": total,
        "files": names,
    }
    _write_json(os.path.join(tmp, EXPORT_INFO), info)
    architecture = to_hf(cfg)["architectures"][0]
    details = [
        f"Exported by compass-jax {info['version']} from `{model_name or 'params'}`: weights in "
        f"{dtype}" + (", block linears in FP8 (see below)." if fp8 else "."),
    ]
    details += ["", fp8_format.card_note(dtype)] if fp8 else []
    if cfg.arch in ("bert", "xlm-roberta"):
        details += ["", "`pooler.dense` is a zero placeholder (embedders do not use it)."]
    if dims:
        details += ["", f"Matryoshka dimensions: {dims}."]
    serve = invocation(tmp, shown="path/to/this/model")["cli"]
    card = model_card(
        title=model_name.rstrip("/").rsplit("/", 1)[-1] if model_name else "compass-jax export",
        architecture=architecture,
        dim=cfg.hidden_size,
        settings=settings,
        base_model=model_name if model_name and model_name.count("/") == 1 else None,
        tags=("compass-jax", *(("fp8", "compressed-tensors") if fp8 else ())),
        details=details,
        serve=f"```bash\n{serve}\n```",
        evaluation=evaluation,
        sections=[fp8_quality.markdown(report, heading="##")] if report else [],
    )
    with open(os.path.join(tmp, "README.md"), "w", encoding="utf-8") as f:
        f.write(card)

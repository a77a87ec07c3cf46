"""`save_hf`: params -> a Hugging Face + sentence-transformers directory (bf16 | fp32 | FP8).

The key table of `load_hf` runs in reverse (`Rule.match_path`, `relayout`), so an export loads
back bit for bit. The directory is complete or absent: it is built under a temporary name beside
the target and renamed into place (`atomic_dir`); an existing target is replaced only by a
complete export, and only with `overwrite`.

Multi-host: call `save_hf` on every process, as any other step of a multi-host program. Each
param is read tensor by tensor: a fully addressable array directly, a replicated one from its
local copy, any other through `process_allgather` (a collective, so every process walks the
tensors in the same order); only process 0 writes and the others return None.

`save_hf` writes what it is given: an FP8 export's quality report (`fp8_report`) is computed
before, by `compass_jax.workflows.export`, which also applies the quality gate.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import pathlib
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from compass_jax import jsonio, tree
from compass_jax.atomic import atomic_dir
from compass_jax.config import ModelConfig, to_hf
from compass_jax.embedding import POOLINGS
from compass_jax.interop import fp8 as fp8_format
from compass_jax.interop import safetensors_io
from compass_jax.interop.export_plan import (
    ExportError,
    export_dtype,
    flat_params,
    pack_shards,
    parse_size,
    plan_units,
    produce,
)
from compass_jax.interop.fp8_report import markdown as fp8_markdown
from compass_jax.interop.fp8_report import write_report as write_fp8_report
from compass_jax.interop.serving import invocation
from compass_jax.interop.st_package import (
    EmbedderSettings,
    model_card,
    read_settings,
    write_settings,
)

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.txt", "vocab.json", "merges.txt", "sentencepiece.bpe.model", "spiece.model",
    "tokenizer.model", "chat_template.jinja",
)  # fmt: skip
EXPORT_INFO = "export_info.json"


def _host(leaf: Any) -> np.ndarray:
    """The full value of `leaf` as float32 on this host, never touching a remote shard."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        if leaf.is_fully_replicated:
            leaf = leaf.addressable_data(0)
        else:
            leaf = multihost_utils.process_allgather(leaf, tiled=True)
    return np.asarray(leaf, np.float32)


def host_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """`params` as float32 numpy on this host (a collective when params span processes: call
    it on every process)."""
    return tree.unflatten({p: _host(v) for p, v in tree.flatten(params).items()})


def _max_tokens(cfg: ModelConfig, source: pathlib.Path) -> int:
    """The longest input: the position table, or the tokenizer's `model_max_length` if less.
    Read from the JSON, so that a bf16 export never imports the tokenizer stack."""
    positions = cfg.max_position_embeddings
    if cfg.arch == "xlm-roberta":  # positions start after padding_idx
        positions -= (cfg.pad_token_id if cfg.pad_token_id is not None else 1) + 1
    path = source / "tokenizer_config.json"
    if not path.is_file():
        return positions
    limit = jsonio.read_json(path).get("model_max_length")
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
    jsonio.write_json(path, data, indent=2)


def export_settings(
    cfg: ModelConfig,
    tokenizer_from: str | os.PathLike,
    *,
    prompts: Mapping[str, str] | None = None,
    pooling: str | None = None,
    normalize: bool | None = True,
    max_seq_length: int | None = None,
) -> EmbedderSettings:
    """The sentence-transformers settings an export writes: the source directory's, with the
    given fields replaced (None: keep the source's)."""
    source = pathlib.Path(tokenizer_from)
    if not source.is_dir():
        raise FileNotFoundError(f"tokenizer_from {source}: not a directory")
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
    return settings


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
    fp8_report: Mapping[str, Any] | None = None,
    model_name: str | None = None,
    provenance: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> pathlib.Path | None:
    """Write `params` as a HF + sentence-transformers directory at `out_dir`.

    `tokenizer_from`: the directory whose tokenizer files are copied and whose
    sentence-transformers settings are the defaults for `prompts`, `pooling`, `normalize`
    (None: keep the source's) and `max_seq_length`. `dtype`: of every weight ("bfloat16" |
    "float32"); with `fp8` (bfloat16 only) the block linears are E4M3 (compressed-tensors
    `float-quantized`). `fp8_report`: an FP8 quality report (`compass_jax.fp8_quality`),
    written as `fp8_report.json`/`.md` and a section of the model card; an export with its
    quality gate is `compass_jax.workflows.export.export_params`. `evaluation`: numbers for the
    model card. `matryoshka_dims`: output widths declared in `config.json` as vLLM reads them
    (`is_matryoshka`, `matryoshka_dimensions`, the full width included; default: the source
    config's). `provenance`: what the params were read from (`compass_jax.resolve.Resolved`),
    recorded in `export_info.json`. A non-finite param is an `ExportError`, nothing written.
    Returns the directory (None on processes other than 0).

    Example:
        cfg, params = load_hf("path/to/model")
        save_hf(cfg, params, "out/model-bf16", tokenizer_from="path/to/model")
    """
    dtype = export_dtype(dtype, fp8)
    out = pathlib.Path(out_dir).absolute()
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass overwrite / --overwrite to replace)")
    source = pathlib.Path(tokenizer_from)
    settings = export_settings(
        cfg, source, prompts=prompts, pooling=pooling, normalize=normalize,
        max_seq_length=max_seq_length,
    )  # fmt: skip
    flat = flat_params(cfg, params)
    units = plan_units(cfg, flat, dtype, fp8)
    shards = pack_shards(units, parse_size(max_shard_size))
    dims = sorted({int(d) for d in matryoshka_dims or ()})
    if any(not 0 < d <= cfg.hidden_size for d in dims):
        raise ExportError(f"matryoshka_dims {dims}: each must be in 1..{cfg.hidden_size}")
    if dims:
        dims = sorted({*dims, cfg.hidden_size})
        cfg = cfg.replace(is_matryoshka=True, matryoshka_dims=tuple(dims))
    dims = list(cfg.matryoshka_dims)
    if fp8_report is not None and not fp8:
        raise ExportError("fp8_report: given for an export without fp8")
    report = dict(fp8_report) if fp8_report is not None else None

    names = (
        ["model.safetensors"]
        if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    writer = jax.process_index() == 0
    try:
        if not writer:
            _write_shards(shards, names, flat, None)
            return None
        with atomic_dir(out, overwrite=overwrite) as tmp:
            weight_map = _write_shards(shards, names, flat, tmp)
            _write_rest(
                tmp, cfg, dtype, fp8, source, settings, weight_map, names, units, dims,
                report, evaluation, model_name, provenance,
            )  # fmt: skip
    except OSError as e:
        if isinstance(e, FileExistsError) and out.exists() and not overwrite:
            raise  # the target appeared meanwhile; it is left as it is
        raise ExportError(f"{out}: cannot write the export: {e}") from e
    return out


def _write_shards(shards, names, flat, tmp) -> dict[str, str]:
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
            value = None if unit.path is None else _host(flat[unit.path])
            if tmp is not None and failure is None:
                try:
                    tensors.update(produce(unit, value))
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
    model_name, provenance,
) -> None:  # fmt: skip
    total = sum(u.nbytes for u in units)
    if len(names) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        _write_json(os.path.join(tmp, "model.safetensors.index.json"), index)
    hf = {**to_hf(cfg), "torch_dtype": dtype, "dtype": dtype}
    quantization = fp8_format.quantization_config(cfg.arch) if fp8 else None
    if quantization:
        hf["quantization_config"] = quantization
    _write_json(os.path.join(tmp, "config.json"), hf)
    copied = [n for n in TOKENIZER_FILES if (source / n).is_file()]
    if not copied:
        raise ExportError(f"tokenizer_from {source}: no tokenizer files ({TOKENIZER_FILES})")
    for name in copied:
        shutil.copyfile(source / name, os.path.join(tmp, name))
    write_settings(tmp, settings, hidden_size=cfg.hidden_size, versions=_versions(),
                   quantization_config=quantization)  # fmt: skip
    if report is not None:
        write_fp8_report(report, tmp)
    info = {
        "exporter": "compass-jax",
        "version": _versions().get("compass_jax"),
        "source": model_name,
        "source_model": dict(provenance) if provenance else None,
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
        sections=[fp8_markdown(report, heading="##")] if report else [],
    )
    with open(os.path.join(tmp, "README.md"), "w", encoding="utf-8") as f:
        f.write(card)

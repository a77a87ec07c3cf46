"""Which tensors an export writes, in which dtype and which shards: the `load_hf` key table run
in reverse (`Rule.match_path`, `relayout`), FP8 block linears with their scales, and the
greedy packing of tensors into shards of at most `max_shard_size` bytes."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import ml_dtypes
import numpy as np

from compass_jax import models, tree
from compass_jax.config import DTYPES, ModelConfig, canonical_dtype
from compass_jax.interop import fp8 as fp8_format
from compass_jax.interop.keymap import LINEAR, PREFIXES, relayout, rules_for

_NP_DTYPES = {"bfloat16": np.dtype(ml_dtypes.bfloat16), "float32": np.dtype(np.float32)}
_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_SIZE_UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


class ExportError(ValueError):
    """An export that cannot be written; the message names the path, param or field."""


def export_dtype(dtype: str, fp8: bool) -> str:
    """The canonical weight dtype ("bfloat16" | "float32") of an export, or an `ExportError`."""
    if dtype not in DTYPES:
        raise ExportError(f"dtype: expected one of {sorted(DTYPES)}, got {dtype!r}")
    dtype = canonical_dtype(dtype)
    if fp8 and dtype != "bfloat16":
        raise ExportError(
            f"dtype {dtype} with fp8: an FP8 export keeps its other weights in bfloat16 "
            "(vLLM's FP8 kernels take bf16/fp16 activations)"
        )
    return dtype


@dataclasses.dataclass(frozen=True)
class Unit:
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


def flat_params(cfg: ModelConfig, params: Mapping[str, Any]) -> dict[str, Any]:
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


def plan_units(cfg: ModelConfig, flat: Mapping[str, Any], dtype: str, fp8: bool) -> list[Unit]:
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
            units.append(Unit(path, rule.transform, tensors, fp8=True))
        else:
            units.append(Unit(path, rule.transform, ((key, shape, out_dtype),)))
    if cfg.arch in ("bert", "xlm-roberta"):
        # transformers' BertModel/XLMRobertaModel build a CLS pooler that embedders never use;
        # zeros keep AutoModel from reporting newly initialised weights.
        d = cfg.hidden_size
        placeholder = (("pooler.dense.weight", (d, d), out_dtype),)
        placeholder += (("pooler.dense.bias", (d,), out_dtype),)
        units.append(Unit(None, "copy", placeholder))
    if fp8:
        weights = {u.tensors[0][0]: u.fp8 for u in units if u.tensors[0][0].endswith(".weight")}
        fp8_format.check_ignore(cfg.arch, weights)
    return units


def produce(unit: Unit, value: np.ndarray | None) -> dict[str, np.ndarray]:
    """The checkpoint tensors of `unit` from its param `value`; a non-finite value (or one
    the export dtype cannot hold) is an `ExportError`, so nothing non-finite is ever written."""
    if unit.path is None:
        return {k: np.zeros(s, d) for k, s, d in unit.tensors}
    array = relayout(unit.transform, value)
    if unit.fp8:
        q, scale = fp8_format.quantize_weight(array)
        tensors = {unit.tensors[0][0]: q, unit.tensors[1][0]: scale}
    else:
        ((key, _, dtype),) = unit.tensors
        tensors = {key: np.ascontiguousarray(array).astype(dtype)}
    for key, tensor in tensors.items():
        bad = int(np.size(tensor) - np.count_nonzero(np.isfinite(tensor.astype(np.float32))))
        if bad:
            raise ExportError(
                f"param {unit.path!r} ({key}): {bad} of {np.size(tensor)} values are not finite "
                "in the export dtype; nothing written"
            )
    return tensors


def pack_shards(units: list[Unit], max_bytes: int) -> list[list[Unit]]:
    """Consecutive units packed greedily; a unit larger than the limit gets a shard alone."""
    shards: list[list[Unit]] = [[]]
    size = 0
    for unit in units:
        if shards[-1] and size + unit.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(unit)
        size += unit.nbytes
    return shards

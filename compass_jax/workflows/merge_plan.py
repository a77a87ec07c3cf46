"""What a checkpoint merge will do, decided before anything is written.

The inputs' tensors are those of the model's safetensors files and of its sentence-transformers
module folders (`2_Dense/model.safetensors`, ...). Each tensor of the first model is either
merged, with a policy, or copied from the first model, with the reason:

- merged: every input has it, floating, with one shape. Its policy comes from the rules matched
  against its compass-jax param path (`interop/keymap.py`, so one rules file serves this and the
  in-memory API) or, for a tensor outside the encoder's key table (BERT's `pooler.*`, a task
  head, module weights), against its name: the key without the architecture prefix
  (`pooler.dense.weight`), or `<module folder>/<key>` (`2_Dense/linear.weight`).
- copied: a tensor outside the key table that some input lacks, that is not floating
  (`position_ids`) or whose shape differs. Encoder weights cannot be copied that way: a missing,
  reshaped or integer encoder weight means the models do not fit together, an error.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence

import jax.numpy as jnp

from compass_jax import jsonio
from compass_jax.interop.keymap import Rule, strip_prefix
from compass_jax.interop.safetensors_io import SafetensorsError, SafetensorsFile, checkpoint_files
from compass_jax.merge import MergeError
from compass_jax.merge.rules import LeafPlan, Policy, plan_leaf

FP8 = "FP8 checkpoints cannot be merged; merge the bf16/fp32 exports"
_FP8_DTYPES = ("float8_e4m3fn", "float8_e5m2")


def module_dirs(model_dir: str) -> list[str]:
    """The sentence-transformers module folders of `model_dir` (`modules.json`), in order."""
    path = os.path.join(model_dir, "modules.json")
    if not os.path.isfile(path):
        return []
    modules = jsonio.read_json(path, expect=list)
    found = [m.get("path") for m in modules if isinstance(m, dict)]
    return [p for p in found if p and os.path.isdir(os.path.join(model_dir, p))]


def _is_fp8(block) -> bool:
    if not isinstance(block, dict):
        return False
    groups = block.get("config_groups")
    weights = [(g or {}).get("weights") or {} for g in groups.values()] if groups else []
    fp8_weights = any(w.get("type") == "float" and w.get("num_bits") == 8 for w in weights)
    return block.get("quant_method") == "fp8" or fp8_weights


def refuse_quantized(model_dir: str) -> None:
    """FP8 (and other quantised) checkpoints hold codes and scales, not weights to average."""
    config = os.path.join(model_dir, "config.json")
    block = jsonio.read_json(config).get("quantization_config") if os.path.isfile(config) else None
    if block is not None:
        what = FP8 if _is_fp8(block) else "quantized checkpoints cannot be merged"
        raise MergeError(f"{model_dir}: {what} (config.json has a quantization_config)")


class Checkpoint:
    """One input: `tensors[name] = (file, key)` over its model and module safetensors files;
    `files` by path relative to the directory (`model_files`: the model's own)."""

    def __init__(self, model_dir: str, arch: str):
        self.dir = model_dir
        self.files: dict[str, SafetensorsFile] = {}
        self.tensors: dict[str, tuple[SafetensorsFile, str]] = {}
        self.names: dict[tuple[str, str], str] = {}  # (file path, key) -> name
        for path in checkpoint_files(model_dir):
            self._add(path, lambda key: strip_prefix(arch, key))
        self.model_files = list(self.files)  # the model's own, before the modules' files
        for module in module_dirs(model_dir):
            folder = os.path.join(model_dir, module)
            for name in sorted(os.listdir(folder)):
                if name.endswith(".safetensors"):
                    self._add(os.path.join(folder, name), lambda key, m=module: f"{m}/{key}")

    def _add(self, path: str, name_of: Callable[[str], str]) -> None:
        st = SafetensorsFile(path)
        self.files[os.path.relpath(path, self.dir)] = st
        for key in st.names():
            if st.dtype(key).name in _FP8_DTYPES:
                raise MergeError(f"{path}: {FP8} (tensor {key!r} is {st.dtype(key).name})")
            name = name_of(key)
            if name in self.tensors:
                raise SafetensorsError(
                    f"{path}: tensor {key!r} also appears in {self.tensors[name][0].path}"
                )
            self.tensors[name] = (st, key)
            self.names[st.path, key] = name


@dataclasses.dataclass(frozen=True)
class Entry:
    """One tensor of an output file: merged by `plan`, or copied (`plan` None) because `why`."""

    key: str
    name: str
    path: str  # the param path, or the name when the key table has none
    plan: LeafPlan | None = None
    why: str | None = None


@dataclasses.dataclass(frozen=True)
class OutputFile:
    """An output safetensors file: the first model's file `name` (relative path), same keys
    in the same order, merged or copied."""

    name: str
    source: SafetensorsFile
    entries: tuple[Entry, ...]


def _param_path(table: Sequence[Rule], name: str) -> str | None:
    if "/" in name:  # a module's tensor
        return None
    hits = [(rule, m) for rule in table if (m := rule.match_hf(name)) is not None]
    if len(hits) > 1:
        raise MergeError(f"key {name!r} matches {len(hits)} rules of the key table")
    return hits[0][0].path.format(**hits[0][1]) if hits and hits[0][0].path else None


def _floating(dtype) -> bool:
    return bool(jnp.issubdtype(dtype, jnp.floating))


def _copy_reason(name: str, inputs: Sequence[Checkpoint], first: Checkpoint) -> str | None:
    st, key = first.tensors[name]
    for m in inputs:
        if name not in m.tensors:
            return f"not in {m.dir}"
        other, other_key = m.tensors[name]
        if not _floating(other.dtype(other_key)):
            return f"dtype {other.dtype(other_key)} in {other.path} is not floating"
        if other.shape(other_key) != st.shape(key):
            return (
                f"shape {list(other.shape(other_key))} in {other.path}, "
                f"{list(st.shape(key))} in {st.path}"
            )
    return None


def _check_encoder_weight(path: str, name: str, inputs: Sequence[Checkpoint], first: Checkpoint):
    key = first.tensors[name][1]
    for m in inputs:
        if name not in m.tensors:
            raise MergeError(f"{m.dir}: no tensor {key!r} ({path}), which {first.dir} has")
    if (why := _copy_reason(name, inputs, first)) is not None:
        raise MergeError(f"{path}: {why}")


def plan_merge(
    inputs: Sequence[Checkpoint],
    first: Checkpoint,
    table: Sequence[Rule],
    rules: Sequence[tuple[str, Policy]],
    t: float,
    num_layers: int,
    mode: str = "mergekit",
) -> tuple[list[OutputFile], list[str]]:
    """The output files, and the tensors that only other inputs have (left out, named
    `name (dir)`); every check is done here, before anything is written."""
    for m in inputs:
        for name, (st, key) in m.tensors.items():
            if name not in first.tensors and _param_path(table, name) is not None:
                raise MergeError(f"{st.path}: tensor {key!r} is not in {first.dir}")
    files = []
    for rel, st in first.files.items():
        entries = []
        for key in sorted(st.names(), key=st.data_offset):  # the first model read in order
            name = first.names[st.path, key]
            path = _param_path(table, name)
            if path is not None:
                _check_encoder_weight(path, name, inputs, first)
                why = None
            else:
                path, why = name, _copy_reason(name, inputs, first)
            plan = None if why else plan_leaf(path, len(st.shape(key)), rules, t, num_layers, mode)
            entries.append(Entry(key, name, path, plan, why))
        files.append(OutputFile(rel, st, tuple(entries)))
    dropped = [
        f"{name} ({m.dir})" for m in inputs for name in m.tensors if name not in first.tensors
    ]
    return files, dropped

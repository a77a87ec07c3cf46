"""Merging Hugging Face checkpoints on disk, one tensor at a time (`compass-jax merge`).

Inputs are memory-mapped a tensor at a time and the output goes through a streaming safetensors
writer, so memory holds about two tensors per input (the next one's inner products are computed
while the current one is written), never whole models. Tensors are merged
under their HF keys, but policies are chosen by the compass-jax param path each key maps to
(`compass_jax/interop/keymap.py`), so the same rules file serves the in-memory API and this
command. Keys with no param path (buffers, unused heads) are copied from the first model.

The output directory is the first model's directory with merged weights: the same shard names
(and a new index when it was sharded), the same config, tokenizer and sentence-transformers
files, plus `merge_report.json`. It is written to a temporary name and renamed when complete.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from compass_jax import jsonio
from compass_jax.atomic import atomic_dir
from compass_jax.config import ConfigError
from compass_jax.interop.keymap import rules_for, strip_prefix
from compass_jax.interop.load import read_config
from compass_jax.interop.safetensors_io import SafetensorsFile, checkpoint_files, iter_tensors
from compass_jax.merge import MergeError, make_merger, parse_rules
from compass_jax.merge.rules import LeafPlan, plan_leaf, rules_to_json
from compass_jax.resolve import resolve_model
from compass_jax.workflows.merge_writer import write_shard

REPORT = "merge_report.json"
INDEX = "model.safetensors.index.json"

# Files that hold (some model's) weights: never copied beside the merged ones, which they would
# contradict. Sentence-transformers module folders (`2_Dense/`, ...) are copied whole, from the
# first model, since they are not part of the backbone that is merged.
_WEIGHT_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".h5",
    ".msgpack",
    ".ckpt",
    ".gguf",
    ".onnx",
    ".onnx_data",
    ".ot",
)
_EXPORT_DIRS = ("onnx", "openvino")
_SHAPE_FIELDS = (
    "arch",
    "vocab_size",
    "hidden_size",
    "num_layers",
    "num_heads",
    "num_kv_heads",
    "head_dim",
    "intermediate_size",
)


class _Model:
    """One input: its directory and `{key without the architecture prefix: (key, file)}`."""

    def __init__(self, model_dir: str, arch: str):
        self.dir = model_dir
        self.keys: dict[str, tuple[str, SafetensorsFile]] = {}
        for key, st in iter_tensors(model_dir):
            self.keys[strip_prefix(arch, key)] = (key, st)

    def array(self, name: str) -> np.ndarray:
        """The tensor, memory-mapped (its pages are released when the array is dropped)."""
        key, st = self.keys[name]
        return st.read(key)


def _param_path(rules, name: str, where: str) -> str | None:
    hits = [(rule, m) for rule in rules if (m := rule.match_hf(name)) is not None]
    if len(hits) != 1:
        what = "matches no rule" if not hits else f"matches {len(hits)} rules"
        raise MergeError(f"{where}: key {name!r} {what} of the key table")
    rule, groups = hits[0]
    return None if rule.path is None else rule.path.format(**groups)


def _check_configs(dirs: Sequence[str]):
    cfgs = [read_config(d) for d in dirs]
    for d, cfg in zip(dirs[1:], cfgs[1:], strict=True):
        for field in _SHAPE_FIELDS:
            if getattr(cfg, field) != getattr(cfgs[0], field):
                raise ConfigError(
                    f"{d}/config.json: {field} = {getattr(cfg, field)!r}, but "
                    f"{dirs[0]}/config.json has {getattr(cfgs[0], field)!r}; cannot merge"
                )
    return cfgs[0]


def _plan(models: list[_Model], first: _Model, arch_rules, rules, t, num_layers):
    """`{name: (param path | None, LeafPlan | None)}` for the first model's keys, after checking
    that every input has every merged key with the same shape."""
    plans: dict[str, tuple[str | None, LeafPlan | None]] = {}
    for name, (key, st) in first.keys.items():
        path = _param_path(arch_rules, name, st.path)
        if path is None:
            plans[name] = (None, None)
            continue
        for m in models:
            if name not in m.keys:
                raise MergeError(f"{m.dir}: no tensor {key!r} ({path}), which {first.dir} has")
            other_key, other = m.keys[name]
            if other.shape(other_key) != st.shape(key):
                raise MergeError(
                    f"{path}: shape {list(other.shape(other_key))} in {other.path}, "
                    f"{list(st.shape(key))} in {st.path}"
                )
            if not jnp.issubdtype(other.dtype(other_key), jnp.floating):
                raise MergeError(
                    f"{path}: dtype {other.dtype(other_key)} in {other.path} is not floating"
                )
        plans[name] = (path, plan_leaf(path, len(st.shape(key)), rules, t, num_layers))
    for m in models:
        for name, (key, st) in m.keys.items():
            if name not in first.keys and _param_path(arch_rules, name, st.path) is not None:
                raise MergeError(f"{st.path}: tensor {key!r} is not in {first.dir}")
    return plans


def _copy_side_files(src: str, dst: str) -> tuple[list[str], list[str]]:
    """Copy everything but weights (and an old merge report) from `src` to `dst`; returns the
    names copied and the names left out."""
    modules: set[str] = set()
    modules_json = os.path.join(src, "modules.json")
    if os.path.isfile(modules_json):
        modules = {m.get("path", "") for m in jsonio.read_json(modules_json, expect=list)} - {""}
    skip = lambda _, names: [n for n in names if n.endswith(_WEIGHT_SUFFIXES)]
    copied, left_out = [], []
    for name in sorted(os.listdir(src)):
        source, target = os.path.join(src, name), os.path.join(dst, name)
        is_dir = os.path.isdir(source)
        if (
            name.startswith(".")
            or name in (INDEX, REPORT, "pytorch_model.bin.index.json")
            or (is_dir and name in _EXPORT_DIRS)
            or (not is_dir and name.endswith(_WEIGHT_SUFFIXES))
        ):
            left_out.append(name)
            continue
        if is_dir:
            shutil.copytree(source, target, ignore=None if name in modules else skip)
        else:
            shutil.copy2(source, target)
        copied.append(name)
    return copied, left_out


def merge_checkpoints(
    models: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    method: str = "slerp",
    base: str | os.PathLike | None = None,
    t: float = 0.5,
    weights: Sequence[float] | None = None,
    rules: Sequence[Any] | None = None,
    mode: str = "mergekit",
    tol: float = 1e-5,
    max_iter: int = 10,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Merge `models` into the HF directory `out` (see the module docstring); returns a
    summary dict.

    `models` are `[a, b]` (lerp, slerp, task_slerp with `base`) or `[x1, ..., xm]` (karcher,
    lerp with weights), each anything `compass_jax.resolve` takes (a HF directory, a bundled
    name, a training workdir, `workdir@step`); `t = 0` gives the first model. Everything is
    checked before anything is written.

    Example:
        merge_checkpoints(["multilingual-e5-small", "runs/e5@400"], "out/merged", t=0.3)
    """
    if (base is not None) != (method == "task_slerp"):
        raise MergeError("--base is required by task_slerp and used by no other method")
    model_dirs = [str(resolve_model(m)) for m in models]
    input_dirs = ([str(resolve_model(base))] if base is not None else []) + model_dirs
    clash = [d for d in input_dirs if os.path.realpath(d) == os.path.realpath(out)]
    if clash:
        raise MergeError(f"--out {os.fspath(out)}: is an input model; write the merge elsewhere")
    rules = parse_rules(rules)
    merger = make_merger(
        method, len(input_dirs), rules=rules, mode=mode, weights=weights, tol=tol, max_iter=max_iter
    )
    cfg = _check_configs(input_dirs)
    arch_rules = rules_for(cfg.arch, attention_bias=cfg.attention_bias)
    inputs = [_Model(d, cfg.arch) for d in input_dirs]
    first = inputs[1] if base is not None else inputs[0]
    plans = _plan(inputs, first, arch_rules, rules, t, cfg.num_layers)
    shards = checkpoint_files(first.dir)
    sharded = os.path.isfile(os.path.join(first.dir, INDEX))

    start = time.perf_counter()
    total = sum(st.nbytes(key) for key, st in first.keys.values())
    rows: list[dict[str, Any]] = []
    with atomic_dir(out, overwrite=overwrite) as tmp:
        copied, left_out = _copy_side_files(first.dir, tmp)
        bar = tqdm(total=total, unit="B", unit_scale=True, desc="merge", disable=not progress)
        for shard in shards:
            for row, nbytes in write_shard(shard, first.dir, tmp, cfg.arch, inputs, plans, merger):
                rows.append(row)
                bar.update(nbytes)
        bar.close()
        if sharded:
            jsonio.write_json(
                os.path.join(tmp, INDEX),
                {
                    "metadata": {"total_size": total},
                    "weight_map": {r["key"]: r["file"] for r in rows},
                },
            )
        seconds = time.perf_counter() - start
        summary = {
            "out": os.fspath(out),
            "method": method,
            "mode": mode,
            "t": t,
            "weights": list(weights) if weights is not None else None,
            "base": input_dirs[0] if base is not None else None,
            "models": model_dirs,
            "rules": rules_to_json(rules),
            "num_layers": cfg.num_layers,
            "tensors": len(rows),
            "merged": sum(r["op"] != "copy" for r in rows),
            "bytes": total,
            "seconds": round(seconds, 3),
            "gb_per_s": round(total / seconds / 1e9, 3),
            "copied_files": copied,
            "not_copied": left_out,
        }
        jsonio.write_json(os.path.join(tmp, REPORT), {**summary, "report": rows})
    return summary

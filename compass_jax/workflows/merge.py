"""Merging Hugging Face checkpoints on disk, one tensor at a time (`compass-jax merge`).

Inputs are memory-mapped and the output goes through a streaming safetensors writer, so memory
holds about a tensor per input and a few chunks in flight, never whole models. Every floating
tensor that all inputs share with one shape is merged: the encoder's weights under the policy
their compass-jax param path selects (`interop/keymap.py`, so one rules file serves this and
the in-memory API), tensors outside the key table (BERT's pooler, heads) and the weights of
sentence-transformers modules (`2_Dense/`) under the policy their name selects. Other tensors
are copied from the first model; `merge_report.json` lists each tensor and says why
(`workflows/merge_plan.py`). Nothing non-finite is written: non-finite inputs or results stop
the merge before the output exists.

The output directory is the first model's directory with merged weights: the same shard names
(and a new index when it was sharded), the same config, tokenizer and sentence-transformers
files, plus `merge_report.json`, and an `export_info.json` that describes the merge when the
first model had one. It is written to a temporary name and renamed when complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

import compass_jax
from compass_jax import jsonio
from compass_jax.atomic import atomic_dir
from compass_jax.config import ConfigError
from compass_jax.interop.keymap import rules_for
from compass_jax.interop.load import read_config
from compass_jax.interop.safetensors_io import MappedFile
from compass_jax.merge import MergeError, check_t, make_merger, parse_rules
from compass_jax.merge.rules import rules_to_json
from compass_jax.resolve import resolve_model
from compass_jax.workflows.merge_plan import Checkpoint, module_dirs, plan_merge, refuse_quantized
from compass_jax.workflows.merge_writer import write_file

REPORT = "merge_report.json"
INDEX = "model.safetensors.index.json"
EXPORT_INFO = "export_info.json"

# Files that hold (some model's) weights: never copied beside the merged ones, which they would
# contradict. In sentence-transformers module folders the safetensors files are merged; a
# module with only other weight files (a pickle we never open) keeps the first model's.
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


def _copy_side_files(src: str, dst: str) -> tuple[list[str], list[str], list[str]]:
    """Copy everything but weights (and the old merge report and export description) from
    `src` to `dst`; returns the names copied, the names left out, and the weight files of
    modules without safetensors, copied as they are from the first model."""
    modules = set(module_dirs(src))
    unmerged: list[str] = []

    def skip(folder: str, names: list[str]) -> list[str]:
        weights = [n for n in names if n.endswith(_WEIGHT_SUFFIXES)]
        module = os.path.relpath(folder, src)
        if module in modules and not any(n.endswith(".safetensors") for n in weights):
            unmerged.extend(f"{module}/{n}" for n in weights)
            return []
        return weights

    copied, left_out = [], []
    for name in sorted(os.listdir(src)):
        source, target = os.path.join(src, name), os.path.join(dst, name)
        is_dir = os.path.isdir(source)
        if (
            name.startswith(".")
            or name in (INDEX, REPORT, EXPORT_INFO, "pytorch_model.bin.index.json")
            or (is_dir and name in _EXPORT_DIRS)
            or (not is_dir and name.endswith(_WEIGHT_SUFFIXES))
        ):
            left_out.append(name)
            continue
        if is_dir:
            shutil.copytree(source, target, ignore=skip)
        else:
            shutil.copy2(source, target)
        copied.append(name)
    return copied, left_out, unmerged


def _export_info(dirs: Sequence[str], first: str, merge: dict[str, Any], files, total: int):
    """The first model's `export_info.json` rewritten to describe the merge (None if it has
    none): what serving reads from it (Matryoshka dimensions) kept only if all inputs agree."""
    infos = [os.path.join(d, EXPORT_INFO) for d in dirs]
    if not os.path.isfile(os.path.join(first, EXPORT_INFO)):
        return None
    found = [jsonio.read_json(p) if os.path.isfile(p) else {} for p in infos]
    dims = {repr(info.get("matryoshka_dimensions")) for info in found}
    own = jsonio.read_json(os.path.join(first, EXPORT_INFO))
    return {
        "exporter": "compass-jax merge",
        "version": compass_jax.__version__,
        "source": None,
        "merge": merge,
        "arch": own.get("arch"),
        "dtype": own.get("dtype"),
        "fp8": None,
        "matryoshka_dimensions": own.get("matryoshka_dimensions") if len(dims) == 1 else None,
        "total_size": total,
        "files": files,
    }


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
    workers: int | None = None,
) -> dict[str, Any]:
    """Merge `models` into the HF directory `out` (see the module docstring); returns a
    summary dict.

    `models` are `[a, b]` (lerp, slerp, task_slerp with `base`) or `[x1, ..., xm]` (karcher,
    lerp with weights), each anything `compass_jax.resolve` takes (a HF directory, a bundled
    name, a training workdir, `workdir@step`); `t = 0` gives the first model, and `t` must be
    finite, in [-1, 2] (`compass_jax.merge.T_RANGE`). `workers` threads share the work (default:
    the usable CPUs, at most 4). Everything is checked before anything is written.

    Example:
        merge_checkpoints(["multilingual-e5-small", "runs/e5@400"], "out/merged", t=0.3)
    """
    if (base is not None) != (method == "task_slerp"):
        raise MergeError("--base is required by task_slerp and used by no other method")
    check_t(t)
    rules = parse_rules(rules)
    count = len(models) + (base is not None)
    merger = make_merger(
        method, count, rules=rules, mode=mode, weights=weights, tol=tol, max_iter=max_iter
    )
    model_dirs = [str(resolve_model(m)) for m in models]
    input_dirs = ([str(resolve_model(base))] if base is not None else []) + model_dirs
    clash = [d for d in input_dirs if os.path.realpath(d) == os.path.realpath(out)]
    if clash:
        raise MergeError(f"--out {os.fspath(out)}: is an input model; write the merge elsewhere")
    for d in input_dirs:
        refuse_quantized(d)
    cfg = _check_configs(input_dirs)
    table = rules_for(cfg.arch, attention_bias=cfg.attention_bias)
    inputs = [Checkpoint(d, cfg.arch) for d in input_dirs]
    first = inputs[1] if base is not None else inputs[0]
    files, dropped = plan_merge(inputs, first, table, rules, t, cfg.num_layers, mode)
    sharded = os.path.isfile(os.path.join(first.dir, INDEX))

    start = time.perf_counter()
    total = sum(u.source.nbytes(e.key) for u in files for e in u.entries)
    own = [u for u in files if u.name in first.model_files]  # the model's files, not modules'
    model_bytes = sum(u.source.nbytes(e.key) for u in own for e in u.entries)
    rows: list[dict[str, Any]] = []
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = workers or max(1, min(4, usable or 1))
    with (
        threadpool_limits(1, user_api="blas"),  # our threads are the parallelism
        ThreadPoolExecutor(workers, thread_name_prefix="merge") as pool,
        contextlib.ExitStack() as stack,
        atomic_dir(out, overwrite=overwrite) as tmp,
    ):
        maps: dict[str, MappedFile] = {}
        for st in (st for m in inputs for st in m.files.values()):
            if st.path not in maps:
                maps[st.path] = stack.enter_context(MappedFile(st))
        copied, left_out, unmerged = _copy_side_files(first.dir, tmp)
        bar = tqdm(total=total, unit="B", unit_scale=True, desc="merge", disable=not progress)
        for unit in files:
            for row, nbytes in write_file(unit, tmp, inputs, merger, maps, pool, workers):
                rows.append(row)
                bar.update(nbytes)
        bar.close()
        if sharded:
            weight_map = {r["key"]: r["file"] for r in rows if r["file"] in first.model_files}
            jsonio.write_json(
                os.path.join(tmp, INDEX),
                {"metadata": {"total_size": model_bytes}, "weight_map": weight_map},
            )
        seconds = time.perf_counter() - start
        merge = {
            "method": method,
            "mode": mode,
            "t": t,
            "weights": list(weights) if weights is not None else None,
            "base": input_dirs[0] if base is not None else None,
            "models": model_dirs,
            "rules": rules_to_json(rules),
        }
        info = _export_info(input_dirs, first.dir, merge, first.model_files, model_bytes)
        if info is not None:
            jsonio.write_json(os.path.join(tmp, EXPORT_INFO), info, indent=2)
        copies = [{"key": r["key"], "file": r["file"], "why": r["why"]} for r in rows if "why" in r]
        summary = {
            "out": os.fspath(out),
            **merge,
            "num_layers": cfg.num_layers,
            "tensors": len(rows),
            "merged": len(rows) - len(copies),
            "copied": copies,
            "left_out": dropped,
            "bytes": total,
            "workers": workers,
            "seconds": round(seconds, 3),
            "gb_per_s": round(total / seconds / 1e9, 3),
            "copied_files": copied,
            "not_copied": left_out,
            "unmerged_weight_files": unmerged,
        }
        jsonio.write_json(os.path.join(tmp, REPORT), {**summary, "report": rows})
    return summary

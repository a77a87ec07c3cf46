"""`load_hf`: a local Hugging Face directory -> (ModelConfig, float32 params)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from compass_jax import jsonio, models, tree
from compass_jax.config import ModelConfig, read_hf_config
from compass_jax.interop.fp8 import FP8_DTYPE, SCALE_SUFFIX, check_scheme, dequantize_weight
from compass_jax.interop.keymap import relayout, rules_for, strip_prefix
from compass_jax.interop.safetensors_io import iter_tensors


class CheckpointError(ValueError):
    """Every problem found while loading a checkpoint, reported together."""

    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        if len(problems) == 1:  # one line, as every other error
            super().__init__(f"{source}: {problems[0]}")
            return
        listing = "\n  ".join(problems)
        super().__init__(f"{source}: {len(problems)} problems loading the checkpoint:\n  {listing}")


def load_params(model_dir: str | os.PathLike, cfg: ModelConfig) -> dict[str, Any]:
    """Read the safetensors weights of `model_dir` into params for `cfg` (numpy, float32).

    Each checkpoint key must match exactly one rule of the architecture's key table, and every
    tensor must have the shape of the abstract skeleton and finite values (a NaN model is
    refused here, before it can produce NaN embeddings, scores or exports); all failures are
    collected and raised together so one run shows everything that is wrong.
    """
    model_dir = os.fspath(model_dir)
    rules = rules_for(cfg.arch, attention_bias=cfg.attention_bias)
    skeleton = tree.flatten(models.abstract_params(cfg))
    params: dict[str, np.ndarray] = {}
    problems: list[str] = []
    files = dict(iter_tensors(model_dir))
    for key, st in files.items():
        if key.endswith(SCALE_SUFFIX) and _is_fp8(files, key.removesuffix(SCALE_SUFFIX)):
            continue  # consumed with its FP8 weight
        name = strip_prefix(cfg.arch, key)
        hits = [(rule, m) for rule in rules if (m := rule.match_hf(name)) is not None]
        if len(hits) != 1:
            what = "matches no rule" if not hits else f"matches {len(hits)} rules"
            problems.append(
                f"{os.path.basename(st.path)}: key {key!r} {what} of the {cfg.arch} table"
            )
            continue
        rule, groups = hits[0]
        if rule.path is None:
            continue
        path = rule.path.format(**groups)
        if path not in skeleton:
            problems.append(f"key {key!r} -> {path!r}: no such parameter for this config")
            continue
        array = relayout(rule.transform, _read(files, key))
        expected = tuple(skeleton[path].shape)
        if array.shape != expected:
            problems.append(
                f"key {key!r} -> {path!r}: shape {tuple(array.shape)} (after {rule.transform}), "
                f"expected {expected}"
            )
            continue
        if path in params:
            problems.append(f"key {key!r} -> {path!r}: parameter already loaded from another key")
            continue
        params[path] = np.asarray(array, dtype=np.float32)
        if bad := int(array.size - np.count_nonzero(np.isfinite(params[path]))):
            problems.append(f"key {key!r}: {bad} of {array.size} values are not finite")
    missing = [p for p in skeleton if p not in params]
    if missing:
        problems.append(
            f"missing parameters ({len(missing)}): {missing[:8]}{' ...' * (len(missing) > 8)}"
        )
    if problems:
        raise CheckpointError(model_dir, problems)
    return tree.unflatten({p: params[p] for p in skeleton})


def _is_fp8(files: dict, key: str) -> bool:
    return key in files and files[key].dtype(key) == FP8_DTYPE


def _read(files: dict, key: str) -> np.ndarray:
    """A tensor as stored, or, for an FP8 weight (compressed-tensors `float-quantized`, as
    `compass-jax export --fp8` writes), dequantised with its per-channel `<key>_scale`."""
    st = files[key]
    if not _is_fp8(files, key):
        return st.read(key)
    scale_key = key + SCALE_SUFFIX
    if scale_key not in files:
        raise CheckpointError(st.path, [f"FP8 tensor {key!r} has no {scale_key!r}"])
    return dequantize_weight(st.read(key), files[scale_key].read(scale_key))


def load_hf(model_dir: str | os.PathLike, **config_overrides: Any) -> tuple[ModelConfig, dict]:
    """`(config, params)` from a local HF directory (`config.json` + safetensors weights).
    FP8 exports load with their weights dequantised (what the FP8 matmuls multiply by); an
    `Encoder` also quantises the activations, as vLLM does (`Encoder.fp8`).

    `config_overrides` replace `ModelConfig` fields, e.g. `dtype="bfloat16"`.
    """
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"{model_dir}: not a directory")
    cfg = read_config(model_dir, **config_overrides)
    return cfg, load_params(model_dir, cfg)


def read_config(model_dir: str | os.PathLike, **config_overrides: Any) -> ModelConfig:
    """The `ModelConfig` of a HF directory whose weights this package can load: `config.json`
    read by `read_hf_config`, and a `quantization_config` only if it is the FP8 scheme that
    `save_hf` writes (another scheme's weights would load as something else)."""
    cfg = read_hf_config(model_dir, **config_overrides)
    path = os.path.join(model_dir, "config.json")
    check_scheme(jsonio.read_json(path).get("quantization_config"), path)
    return cfg

"""FP8 (E4M3) weights in the compressed-tensors `float-quantized` format that vLLM loads directly.

The scheme is llm-compressor's FP8_DYNAMIC (compressed-tensors `quant_scheme.FP8_DYNAMIC`):

- every linear inside the transformer blocks: weight `[out, in]` as `float8_e4m3fn`, plus a
  float32 `weight_scale` `[out, 1]`, one per output channel, `scale = absmax(row) / 448`;
- activations: quantised per token at serving time (vLLM's dynamic per-token kernel), so the
  checkpoint carries no input scale;
- embeddings, norms, biases and pooler/LM heads stay in the export dtype, and their modules are
  named under `ignore` so that name-based tools (which treat "Linear" as "every weight") skip
  them too.

Rounding and clamping follow compressed-tensors (`calculate_qparams`, `_quantize`): an all-zero
row gets scale `finfo(float32).eps` instead of 0, `w / scale` is clamped to [-448, 448] and cast
to E4M3 with round-to-nearest-even. The scale is computed in float32 from the float32 master
weights (llm-compressor computes it in the model dtype, usually bf16: ours is the more exact
value of the same formula).

`simulate_w8a8` runs a JAX function as vLLM serves the checkpoint: it also quantises the input of
every FP8 matmul per token, as a transformation of the traced program (no model hook).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from jax.extend import core as jex
from jaxtyping import Array, Float

from compass_jax import jsonio, tree
from compass_jax.config import ConfigError
from compass_jax.interop.keymap import LINEAR, rules_for

FP8_DTYPE = np.dtype(ml_dtypes.float8_e4m3fn)
FP8_MAX = float(ml_dtypes.finfo(ml_dtypes.float8_e4m3fn).max)  # 448
# vLLM's dynamic per-token kernels floor the activation scale here (an all-zero token).
MIN_TOKEN_SCALE = 1.0 / (FP8_MAX * 512.0)
_WEIGHT_SCALE_EPS = float(np.finfo(np.float32).eps)
SCALE_SUFFIX = "_scale"  # `<module>.weight` -> `<module>.weight_scale`

# Module names (compressed-tensors / vLLM `ignore` entries) of everything left unquantised.
# `re:` patterns anchored at the end, because loaders prefix module names differently
# (`embeddings.LayerNorm` in transformers' BertModel, `model.embed_tokens` in vLLM's Qwen3).
IGNORE: dict[str, tuple[str, ...]] = {
    "bert": (
        r"re:.*embeddings\.(word|position|token_type)_embeddings$",
        r"re:.*LayerNorm$",
        r"re:.*pooler\.dense$",
    ),
    "qwen3": (r"re:.*embed_tokens$", r"re:.*norm$", r"re:.*lm_head$"),
}
IGNORE["xlm-roberta"] = IGNORE["bert"]


def is_ignored(module: str, ignore: Iterable[str]) -> bool:
    """compressed-tensors' `match_name`: exact name, or `re.match` for `re:` entries."""
    for entry in ignore:
        if entry.startswith("re:"):
            if re.match(entry[3:], module):
                return True
        elif entry == module:
            return True
    return False


def check_ignore(arch: str, weights: dict[str, bool]) -> None:
    """Name-based tools decide by `ignore` alone, so it must name the module of every
    unquantised weight and of no FP8 one; `weights`: `<module>.weight` key -> is FP8."""
    ignore = IGNORE[arch]
    wrong = [k for k, q in weights.items() if is_ignored(k.removesuffix(".weight"), ignore) == q]
    if wrong:
        raise ValueError(f"FP8 ignore list {list(ignore)} disagrees with the weights {wrong[:5]}")


def card_note(dtype: str) -> str:
    """The model-card paragraph describing an FP8 checkpoint."""
    return (
        "FP8: compressed-tensors `float-quantized` (llm-compressor FP8_DYNAMIC): every linear of "
        "the transformer blocks is `float8_e4m3fn` with a float32 per-output-channel "
        "`weight_scale` `[out, 1]`; activations are quantised per token at serving time. "
        f"Embeddings, norms, biases and the pooler stay in {dtype}."
    )


def is_block_linear(arch: str, path: str, *, attention_bias: bool = False) -> bool:
    """Whether param `path` is the kernel of a linear inside a transformer block (the layers
    that FP8_DYNAMIC quantises); decided by the same key table that loading uses."""
    for rule in rules_for(arch, attention_bias=attention_bias):
        if rule.match_path(path) is not None:
            return rule.transform == LINEAR and rule.path.startswith("layers.{i}.")
    return False


def quantize_weight(
    weight: Float[np.ndarray, "o i"],
) -> tuple[np.ndarray, Float[np.ndarray, "o 1"]]:
    """`(float8_e4m3fn [out, in], float32 scale [out, 1])` for a torch-layout weight."""
    w = np.asarray(weight, np.float32)
    if w.ndim != 2:
        raise ValueError(f"FP8 weights must be 2-D [out, in], got shape {w.shape}")
    scale = np.abs(w).max(axis=1, keepdims=True) / np.float32(FP8_MAX)
    scale = np.where(scale == 0, np.float32(_WEIGHT_SCALE_EPS), scale).astype(np.float32)
    q = np.clip(w / scale, -FP8_MAX, FP8_MAX).astype(FP8_DTYPE)
    return q, scale


def dequantize_weight(q: np.ndarray, scale: Float[np.ndarray, "o 1"]) -> Float[np.ndarray, "o i"]:
    return q.astype(np.float32) * np.asarray(scale, np.float32)


def relative_error(weight: np.ndarray, q: np.ndarray, scale: np.ndarray) -> float:
    """||W - deq(q)||_F / ||W||_F, in float64."""
    w = np.asarray(weight, np.float64)
    err = np.linalg.norm(w - dequantize_weight(q, scale).astype(np.float64))
    return float(err / max(np.linalg.norm(w), 1e-30))


def fake_quantize_tokens(
    x: Float[Array, "*t d"], axes: tuple[int, ...] = (-1,)
) -> Float[Array, "*t d"]:
    """Quantise-dequantise each token (the values along `axes`) to E4M3 as vLLM's dynamic
    per-token path does at serving time: `scale = max(absmax / 448, 1 / (448 * 512))`."""
    x32 = x.astype(jnp.float32)
    absmax = jnp.max(jnp.abs(x32), axis=axes, keepdims=True)
    scale = jnp.maximum(absmax / FP8_MAX, MIN_TOKEN_SCALE)
    q = jnp.clip(x32 / scale, -FP8_MAX, FP8_MAX).astype(jnp.float8_e4m3fn)
    return (q.astype(jnp.float32) * scale).astype(x.dtype)


def quantization_config(arch: str) -> dict:
    """The `quantization_config` block of `config.json`, as compressed-tensors serialises
    FP8_DYNAMIC (`ModelCompressor.update_config`) and vLLM's `CompressedTensorsConfig` reads."""
    common = {"num_bits": 8, "type": "float", "symmetric": True, "group_size": None}
    common |= {"block_structure": None, "actorder": None, "observer_kwargs": {}}
    weights = {**common, "strategy": "channel", "dynamic": False, "observer": None}
    activations = {**common, "strategy": "token", "dynamic": True, "observer": None}
    return {
        "quant_method": "compressed-tensors",
        "format": "float-quantized",
        "quantization_status": "compressed",
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": weights,
                "input_activations": activations,
                "output_activations": None,
                "format": "float-quantized",
            }
        },
        "ignore": list(IGNORE[arch]),
        "kv_cache_scheme": None,
        "global_compression_ratio": None,
        "sparsity_config": {},
        "transform_config": {},
    }


def served_fp8(model_dir: str | os.PathLike, cfg, params: Any) -> frozenset[str] | None:
    """The param paths an FP8 export serves as FP8 matmuls (None for any other model): the
    block linears, when `config.json` carries a `quantization_config` (checked on load)."""
    path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(path) or "quantization_config" not in jsonio.read_json(path):
        return None
    return frozenset(
        p
        for p in tree.flatten(params)
        if is_block_linear(cfg.arch, p, attention_bias=cfg.attention_bias)
    )


def check_scheme(block: Any, source: str) -> None:
    """Refuse a `quantization_config` other than the FP8 scheme `quantization_config` writes
    (per-channel E4M3 weights, dynamic per-token E4M3 activations): loading another scheme's
    weights as if they were this one would silently compute something else. None (an
    unquantised model) passes."""
    if block is None:
        return
    expected = quantization_config("bert")["config_groups"]["group_0"]
    essential = ("num_bits", "type", "strategy", "dynamic", "symmetric", "group_size")
    problems = []
    if not isinstance(block, dict):
        problems.append(f"expected an object, got {block!r}")
    else:
        for field in ("quant_method", "format"):
            want = {"quant_method": "compressed-tensors", "format": "float-quantized"}[field]
            if block.get(field) != want:
                problems.append(f"{field} is {block.get(field)!r}, expected {want!r}")
        for name, group in (block.get("config_groups") or {}).items():
            for part in ("weights", "input_activations"):
                got = (group or {}).get(part) or {}
                for k in essential:
                    if got.get(k) != expected[part][k]:
                        problems.append(
                            f"config_groups.{name}.{part}.{k} is {got.get(k)!r}, "
                            f"expected {expected[part][k]!r}"
                        )
    if problems:
        raise ConfigError(
            f"{source}: quantization_config: only compass-jax's FP8 scheme (per-channel E4M3 "
            f"weights, dynamic per-token E4M3 activations) loads: {'; '.join(problems)}"
        )


# Primitives that only move or re-type a weight on its way to the matmul.
_LAYOUT = frozenset(
    {"convert_element_type", "reshape", "transpose", "copy", "squeeze", "expand_dims"}
    | {"broadcast_in_dim", "sharding_constraint", "device_put"}
)
# Call-like primitives whose body runs once with the caller's operands: safe to inline. (A loop,
# e.g. `scan` over stacked layers, is not: it is refused like any other unknown consumer.)
_CALLS = frozenset(
    {"jit", "pjit", "closed_call", "core_call", "remat", "checkpoint"}
    | {"custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr"}
)


def simulate_w8a8(fn: Callable, quantized: Callable[[str], bool]) -> Callable:
    """`fn(params, *arrays)` with the other operand of every matmul that consumes a param whose
    path satisfies `quantized` fake-quantised to E4M3 per token (over its contracting axes).

    A pure transformation of the traced program (no model hook): `fn` is traced to a jaxpr and
    re-evaluated with the quantiser inserted, so it composes with `jax.jit`. Every quantised
    param must reach a matmul through layout-only operations, else the placement of the
    activation quantiser would be a guess, and that is an error.
    """

    def wrapped(params, *args):
        leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
        paths = [tree.keypath_str(p) for p, _ in leaves]
        values = [v for _, v in leaves]
        flat_args, args_tree = jax.tree.flatten(args)
        rebuild = lambda vs, fa: fn(treedef.unflatten(vs), *args_tree.unflatten(fa))
        closed, out_shape = jax.make_jaxpr(rebuild, return_shape=True)(values, flat_args)
        taints = [frozenset({i}) if quantized(p) else frozenset() for i, p in enumerate(paths)]
        taints += [frozenset()] * len(flat_args)
        reached: set[int] = set()
        outs = _evaluate(closed.jaxpr, closed.consts, [*values, *flat_args], taints, reached)
        missed = [paths[i] for i, t in enumerate(taints[: len(paths)]) if t and i not in reached]
        if missed:
            raise ValueError(f"simulate_w8a8: quantised params never reach a matmul: {missed}")
        return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

    return wrapped


def _evaluate(jaxpr, consts, args, taints, reached: set[int]) -> list:
    """Evaluate `jaxpr`, tracking which values derive from quantised params (their indices)."""
    env: dict[Any, tuple[Any, frozenset]] = {}
    read = lambda v: (v.val, frozenset()) if isinstance(v, jex.Literal) else env[v]
    for var, value in zip(jaxpr.constvars, consts, strict=True):
        env[var] = (value, frozenset())
    for var, value, taint in zip(jaxpr.invars, args, taints, strict=True):
        env[var] = (value, taint)
    for eqn in jaxpr.eqns:
        values, in_taints = zip(*map(read, eqn.invars), strict=True) if eqn.invars else ((), ())
        tainted = frozenset().union(*in_taints)
        name = eqn.primitive.name
        sub = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
        out_taint = frozenset()
        if tainted and name == "dot_general":
            reached |= tainted
            outs = _bind(eqn, _quantize_matmul_input(eqn, list(values), in_taints))
        elif tainted and name in _CALLS and sub is not None:
            inner, inner_consts = getattr(sub, "jaxpr", sub), getattr(sub, "consts", [])
            outs = _evaluate(inner, inner_consts, list(values), list(in_taints), reached)
            out_taint = tainted
        elif tainted and name not in _LAYOUT:
            raise ValueError(
                f"simulate_w8a8: a quantised param feeds {name!r}, not only matmuls; "
                "cannot place the per-token activation quantiser"
            )
        else:
            outs, out_taint = _bind(eqn, values), tainted
        for var, value in zip(eqn.outvars, outs, strict=True):
            if not isinstance(var, jex.DropVar):
                env[var] = (value, out_taint)
    return [read(v)[0] for v in jaxpr.outvars]


def _quantize_matmul_input(eqn, values: list, taints) -> list:
    (contract_lhs, contract_rhs), _ = eqn.params["dimension_numbers"]
    if taints[0] and taints[1]:
        raise ValueError("simulate_w8a8: a matmul of two quantised params")
    side, axes = (0, contract_lhs) if taints[1] else (1, contract_rhs)
    values[side] = fake_quantize_tokens(values[side], tuple(axes))
    return values


def _bind(eqn, values) -> list:
    params = eqn.primitive.get_bind_params(eqn.params)
    subfuns = ()
    if isinstance(params, tuple):  # (subfuns, params) in older JAX
        subfuns, params = params
    with eqn.ctx.manager:
        out = eqn.primitive.bind(*subfuns, *values, **params)
    return list(out) if eqn.primitive.multiple_results else [out]

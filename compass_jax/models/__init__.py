"""Pure-functional encoders: `init(cfg, key) -> params` and `apply(cfg, params, ...)`.

This is the only package that imports Flax. Modules are NNX classes holding parameters only;
outside this package a model is its `ModelConfig` plus a nested dict of arrays whose dotted paths
(`layers.3.attn.q_proj.kernel`) are what every rule table matches. `apply` rebuilds the module
inside the traced function, so it composes with `jax.jit`, `jax.grad`, `jax.vjp` and shardings
like any other pure function.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Bool, Float, Int

from compass_jax import tree
from compass_jax.config import ModelConfig
from compass_jax.models.bert import Bert
from compass_jax.models.qwen3 import Qwen3

Params = dict[str, Any]

_ARCH_MODULES = {"bert": Bert, "xlm-roberta": Bert, "qwen3": Qwen3}


def _module(cfg: ModelConfig, rngs: nnx.Rngs) -> nnx.Module:
    return _ARCH_MODULES[cfg.arch](cfg, rngs=rngs)


def _string_keys(tree: Any) -> Any:
    """NNX names list entries by int; params use strings so paths read `layers.3....`."""
    if isinstance(tree, dict):
        return {str(k): _string_keys(v) for k, v in tree.items()}
    return tree


def _nnx_keys(params: Any, template: Any, path: str = "") -> Any:
    """Re-key `params` like NNX's `template`, with an error naming the first path that differs."""
    if not isinstance(template, dict):
        return params
    if not isinstance(params, dict):
        raise ValueError(f"params: expected a dict at {path or '<root>'}")
    expected = {str(k): k for k in template}
    if set(expected) != set(params):
        missing = sorted(set(expected) - set(params))
        extra = sorted(set(params) - set(expected))
        raise ValueError(f"params at {path or '<root>'}: missing {missing}, unexpected {extra}")
    return {expected[k]: _nnx_keys(params[k], template[expected[k]], f"{path}{k}.") for k in params}


@functools.lru_cache(maxsize=64)
def _graph(cfg: ModelConfig) -> tuple[nnx.GraphDef, Any]:
    """The module's graph definition and abstract pure-dict state, traced once per config."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: _module(cfg, nnx.Rngs(0))))
    return graphdef, nnx.to_pure_dict(state)


def init(cfg: ModelConfig, key: jax.Array) -> Params:
    """Random float32 params for `cfg` (std 0.02 normal kernels, unit norms, zero biases)."""
    graphdef_state = nnx.split(_module(cfg, nnx.Rngs(params=key)))[1]
    return _string_keys(nnx.to_pure_dict(graphdef_state))


def abstract_params(cfg: ModelConfig) -> Params:
    """`jax.ShapeDtypeStruct` leaves with the structure of `init(cfg, key)`, nothing allocated."""
    return _string_keys(_graph(cfg)[1])


def _model(cfg: ModelConfig, params: Params) -> nnx.Module:
    graphdef, template = _graph(cfg)
    return nnx.merge(graphdef, nnx.State(_nnx_keys(params, template)))


def apply(
    cfg: ModelConfig,
    params: Params,
    input_ids: Int[Array, "b l"],
    segment_ids: Int[Array, "b l"] | Bool[Array, "b l"],
    *,
    dropout_key: jax.Array | None = None,
) -> Float[Array, "b l d"]:
    """Final hidden states in `cfg.dtype`. Dropout runs only when `dropout_key` is given.

    `segment_ids` says which text of its row each token belongs to (0: padding): tokens attend
    only within their text and positions restart at each text, so several texts packed into one
    row come out exactly as they would alone. An attention mask (0/1 or bool) is the case of one
    text per row, padded on either side.
    """
    return _model(cfg, params)(input_ids, segment_ids.astype(jnp.int32), dropout_key)


def apply_trunk(
    cfg: ModelConfig,
    params: Params,
    input_ids: Int[Array, "b l"],
    segment_ids: Int[Array, "b l"] | Bool[Array, "b l"],
    depth: int,
) -> Float[Array, "b l d"]:
    """The states after the embeddings and layers `0..depth-1` (the trunk), in `cfg.dtype`,
    without dropout: `apply_top(cfg, params, apply_trunk(...), segment_ids, depth)` is `apply`.
    A text's trunk states, like its final ones, do not depend on its row neighbours."""
    segment_ids = segment_ids.astype(jnp.int32)
    return _model(cfg, params).trunk(input_ids, segment_ids, depth)


def apply_top(
    cfg: ModelConfig,
    params: Params,
    hidden: Float[Array, "b l d"],
    segment_ids: Int[Array, "b l"] | Bool[Array, "b l"],
    depth: int,
    *,
    dropout_key: jax.Array | None = None,
) -> Float[Array, "b l d"]:
    """Final hidden states from the trunk's (`apply_trunk`): layers `depth..` and the final
    norm. Dropout keys are those the same layers get in `apply`."""
    segment_ids = segment_ids.astype(jnp.int32)
    return _model(cfg, params).top(hidden, segment_ids, depth, dropout_key)


def trunk_paths(cfg: ModelConfig, depth: int) -> set[str]:
    """The dotted param paths of the trunk of `depth` layers (embeddings and layers
    `0..depth-1`)."""
    prefixes = ("embeddings.", *(f"layers.{i}." for i in range(depth)))
    return {p for p in tree.flatten(abstract_params(cfg)) if p.startswith(prefixes)}

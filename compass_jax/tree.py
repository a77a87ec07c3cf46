"""Params are nested dicts with string keys; these helpers address their leaves by dotted path
(`layers.3.attn.q_proj.kernel`), the name every rule table (loading, sharding, merging,
freezing) matches against."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import jax

T = TypeVar("T")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": x}}` -> `{"a.b": x}` (insertion order kept)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of `flatten`."""
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return tree


def map_with_path(fn: Callable[[str, Any], Any], tree: Mapping[str, Any]) -> dict[str, Any]:
    """Apply `fn(path, leaf)` to every leaf, keeping the structure."""
    return unflatten({path: fn(path, leaf) for path, leaf in flatten(tree).items()})


def first_match(path: str, rules: Iterable[tuple[str, T]]) -> T | None:
    """The value of the first `(regex, value)` rule whose regex matches `path` (re.search)."""
    for pattern, value in rules:
        if re.search(pattern, path):
            return value
    return None


def keypath_str(keypath: tuple[Any, ...]) -> str:
    """A `jax.tree_util` key path as a dotted path: `("opt", 0, "mu", "layers", "3")` ->
    `opt.0.mu.layers.3`, so param-path rules also match inside optimizer states."""
    parts = []
    for key in keypath:
        for attr in ("key", "idx", "name"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return ".".join(parts)


def map_with_keypath(fn: Callable[[str, Any], Any], pytree: Any) -> Any:
    """Like `map_with_path`, for any pytree (optax states, dataclasses, tuples)."""
    return jax.tree_util.tree_map_with_path(lambda kp, x: fn(keypath_str(kp), x), pytree)

"""Per-path merge policies: an ordered list of `(regex over the param path, policy)`, first match
wins (`compass_jax.tree.first_match`), exactly like the sharding and loading tables.

A policy says which operation merges a leaf and at which `t`. Its JSON-able spellings:

    0.3                        the leaf's default operation at t = 0.3
    [0.0, 0.5, 1.0]            a depth schedule: t interpolated over the layer index (mergekit's
                               list-valued `t`, same formula)
    "lerp" | "keep_a" | "keep_b" | "spherical"
                               that operation at the call's t ("spherical" is the method's own
                               geodesic operation: slerp, task-vector slerp or Karcher mean)
    {"op": "lerp", "t": 0.2}   both explicitly; "t" may be a number or a schedule

The default operation of a leaf depends on the mode. In "mergekit" mode every leaf is
"spherical", as mergekit's `slerp` treats every tensor (its lerp fallback for nearly colinear
tensors keeps a LayerNorm scale that is all ones in both models all ones), so a run without rules
equals mergekit's on every tensor. In "geodesic" mode 0-D/1-D leaves (norm scales, biases) default
to "lerp": the angle between two bias vectors says little, and the norm-preserving geodesic would
rescale them. A leaf no rule matches gets its default operation at the call's t.

Every t, the call's and the rules', is a finite number in `T_RANGE` = [-1, 2]: 0 gives the first
model and 1 the second, values between interpolate and values outside [0, 1] extrapolate (along
the geodesic for spherical ops), as task-vector extrapolation does; anything further out is
taken for a mistake (`--t 30` for 0.3, an overflow) rather than merged into a broken model.

Depth schedules follow mergekit: layer `i` of `L` sits at fraction `i / (L - 1)` (1 when L = 1)
and the value is read off the list by piecewise-linear interpolation. Leaves outside the layer
stack take the first value when they come before it (`embeddings.*`, mergekit's "pre-weights")
and the last value otherwise (`final_norm`, heads: mergekit's "post-weights").
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

from compass_jax import tree

OPS = ("spherical", "lerp", "keep_a", "keep_b")
T_RANGE = (-1.0, 2.0)
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)(?:\.|$)")


class RulesError(ValueError):
    """A malformed rule; the message names the source and the rule's index."""


@dataclasses.dataclass(frozen=True)
class Policy:
    # None: the leaf's default op (`default_op`: by the leaf's rank and the mode).
    op: str | None = None
    # None: the call's t; a tuple is a depth schedule.
    t: float | tuple[float, ...] | None = None


@dataclasses.dataclass(frozen=True)
class LeafPlan:
    """How one leaf is merged: the resolved op, its t (None for keep_*) and the rule used."""

    op: str
    t: Any
    rule: str | None  # the regex that matched; None when the default applied


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def t_problem(value: Any) -> str | None:
    """What is wrong with `value` as a t (None: nothing)."""
    lo, hi = T_RANGE
    try:
        number = float(value)
    except (TypeError, ValueError):
        return f"expected a number, got {value!r}"
    if not (math.isfinite(number) and lo <= number <= hi):
        return (
            f"{value!r} is not a finite number in [{lo:g}, {hi:g}] (0 keeps the first model, "
            "1 the second; values outside [0, 1] extrapolate)"
        )
    return None


def parse_policy(value: Any, where: str = "policy") -> Policy:
    """A `Policy` from any of its spellings (see the module docstring)."""
    if isinstance(value, Policy):
        return value
    if _number(value):
        if (problem := t_problem(value)) is not None:
            raise RulesError(f"{where}: t {problem}")
        return Policy(t=float(value))
    if isinstance(value, list | tuple):
        if not value or not all(_number(v) for v in value):
            raise RulesError(f"{where}: a depth schedule must be a non-empty list of numbers")
        for v in value:
            if (problem := t_problem(v)) is not None:
                raise RulesError(f"{where}: depth schedule: t {problem}")
        return Policy(t=tuple(float(v) for v in value))
    if isinstance(value, str):
        if value not in OPS:
            raise RulesError(f"{where}: unknown op {value!r}; expected one of {OPS}")
        return Policy(op=value)
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"op", "t"})
        if unknown:
            raise RulesError(f"{where}: unknown keys {unknown}; a policy dict has 'op' and 't'")
        op = value.get("op")
        if op is not None and op not in OPS:
            raise RulesError(f"{where}: unknown op {op!r}; expected one of {OPS}")
        t = parse_policy(value["t"], where).t if value.get("t") is not None else None
        return Policy(op=op, t=t)
    raise RulesError(
        f"{where}: a policy is a number, a list of numbers, one of {OPS}, or "
        f"{{'op': ..., 't': ...}}; got {value!r}"
    )


def parse_rules(rules: Iterable[Any] | None, source: str = "rules") -> list[tuple[str, Policy]]:
    """Validate `[(regex, policy), ...]`; every error names `source` and the rule's index."""
    parsed: list[tuple[str, Policy]] = []
    for i, rule in enumerate(rules or ()):
        where = f"{source}: rule {i}"
        if not isinstance(rule, list | tuple) or len(rule) != 2 or not isinstance(rule[0], str):
            raise RulesError(f"{where}: expected [regex, policy], got {rule!r}")
        try:
            re.compile(rule[0])
        except re.error as e:
            raise RulesError(f"{where}: bad regex {rule[0]!r} ({e})") from None
        parsed.append((rule[0], parse_policy(rule[1], where)))
    return parsed


def load_rules(path: str | os.PathLike) -> list[tuple[str, Policy]]:
    """Rules from a JSON file holding a list of `[regex, policy]` pairs."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such rules file") from None
    except json.JSONDecodeError as e:
        raise RulesError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(raw, list):
        raise RulesError(f"{path}: expected a JSON list of [regex, policy] pairs")
    return parse_rules(raw, source=path)


def rules_to_json(rules: Sequence[tuple[str, Policy]]) -> list[list[Any]]:
    """The explicit `{"op", "t"}` spelling of parsed rules (for reports)."""
    return [
        [pattern, {"op": p.op, "t": list(p.t) if isinstance(p.t, tuple) else p.t}]
        for pattern, p in rules
    ]


def layer_index(path: str) -> int | None:
    m = _LAYER.search(path)
    return int(m.group(1)) if m else None


def layer_count(paths: Iterable[str]) -> int:
    """1 + the largest `layers.{i}` index among `paths` (0 when there is no layer stack)."""
    indices = [i for p in paths if (i := layer_index(p)) is not None]
    return max(indices) + 1 if indices else 0


def depth_fraction(path: str, num_layers: int) -> float:
    """Where `path` sits in the stack, in [0, 1], as mergekit places its tensors."""
    i = layer_index(path)
    if i is None:
        return 0.0 if path.startswith("embeddings.") else 1.0
    return i / (num_layers - 1) if num_layers > 1 else 1.0


def schedule_value(values: Sequence[float], fraction: float) -> float:
    """mergekit's `evaluate_setting` for a list of numbers."""
    scaled = fraction * (len(values) - 1)
    i0 = int(scaled)
    i1 = min(len(values) - 1, i0 + 1)
    frac = scaled - i0
    return (1 - frac) * values[i0] + frac * values[i1]


def default_op(ndim: int, mode: str = "mergekit") -> str:
    """The operation of a leaf no rule names (see the module docstring)."""
    return "spherical" if mode == "mergekit" or ndim >= 2 else "lerp"


def plan_leaf(
    path: str,
    ndim: int,
    rules: Sequence[tuple[str, Policy]],
    t: Any,
    num_layers: int,
    mode: str = "mergekit",
) -> LeafPlan:
    """Resolve the policy of one leaf: the first matching rule, else the leaf's default."""
    rule, policy = tree.first_match(path, ((p, (p, pol)) for p, pol in rules)) or (None, Policy())
    op = policy.op or default_op(ndim, mode)
    if op in ("keep_a", "keep_b"):
        return LeafPlan(op, None, rule)
    if isinstance(policy.t, tuple):
        t = schedule_value(policy.t, depth_fraction(path, num_layers))
    elif policy.t is not None:
        t = policy.t
    return LeafPlan(op, t, rule)

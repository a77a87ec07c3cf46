"""Merging whole param trees: check that the trees agree, resolve each leaf's policy, merge it.

`merge(...)` (and its named forms `lerp`, `slerp`, `karcher_mean`, `task_slerp`) is pure and
jittable as long as `with_report` is off; the report reads scalars back to the host.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from compass_jax import tree
from compass_jax.merge.leaf import LeafOp, MergeError, check_leaves, merge_leaf
from compass_jax.merge.rules import (
    LeafPlan,
    Policy,
    layer_count,
    parse_rules,
    plan_leaf,
    t_problem,
)
from compass_jax.merge.spherical import Mode

Params = Mapping[str, Any]
METHODS = ("lerp", "slerp", "karcher", "task_slerp")


def check_trees(trees: Sequence[Params], names: Sequence[str]) -> dict[str, list[Any]]:
    """`{path: [leaf of each tree]}`, or a `MergeError` naming the first path, shape or dtype
    at which the trees differ."""
    flats = [tree.flatten(t) for t in trees]
    ref = flats[0]
    for flat, name in zip(flats[1:], names[1:], strict=True):
        for path in ref:
            if path not in flat:
                raise MergeError(f"{path}: in {names[0]} but not in {name}")
        for path in flat:
            if path not in ref:
                raise MergeError(f"{path}: in {name} but not in {names[0]}")
    for path in ref:
        check_leaves([f[path] for f in flats], names, path)
    return {path: [f[path] for f in flats] for path in ref}


def check_t(t: Any, name: str = "--t") -> None:
    """Refuse a `t` that is not a finite number in `T_RANGE`; a traced `t` (inside `jit`) is
    the caller's to check."""
    if isinstance(t, jax.core.Tracer):
        return
    if (problem := t_problem(t)) is not None:
        raise MergeError(f"{name}: {problem}")


def input_names(method: str, count: int) -> list[str]:
    if method == "task_slerp":
        return ["base", "a", "b"][:count]
    return ["a", "b"] if count == 2 else [f"trees[{i}]" for i in range(count)]


@dataclasses.dataclass(frozen=True)
class Merger:
    """A validated method: its input count, weights and rules checked once, then applied leaf by
    leaf. Inputs are `[a, b]` for lerp/slerp, `[base, a, b]` for task_slerp, `[x1, ..., xm]`
    for karcher; lerp over m != 2 inputs (or with weights) is the weighted linear mean."""

    method: str
    count: int
    mode: Mode = "mergekit"
    weights: tuple[float, ...] | None = None
    tol: float = 1e-5
    max_iter: int = 10

    @property
    def kind(self) -> str:
        if self.method == "task_slerp":
            return "task"
        many = self.method == "karcher" or (self.method == "lerp" and self.weights is not None)
        return "many" if many else "pair"

    def leaf_op(self, plan: LeafPlan) -> tuple[LeafOp, LeafPlan]:
        """The op for a leaf and the plan as applied (the weights, not t, place a mean)."""
        op = "lerp" if self.method == "lerp" and plan.op == "spherical" else plan.op
        plan = dataclasses.replace(plan, op=op, t=None if self.kind == "many" else plan.t)
        return LeafOp(self.kind, op, self.mode, self.tol, self.max_iter), plan

    def __call__(self, plan: LeafPlan, xs: Sequence[Any]) -> tuple[Any, dict[str, Any], LeafPlan]:
        leaf_op, plan = self.leaf_op(plan)
        return (*merge_leaf(leaf_op, xs, plan.t, self.weights), plan)


def make_merger(
    method: str,
    count: int,
    *,
    rules: Sequence[tuple[str, Policy]] = (),
    mode: Mode = "mergekit",
    weights: Sequence[float] | None = None,
    tol: float = 1e-5,
    max_iter: int = 10,
) -> Merger:
    """A `Merger` after checking the method, the number of inputs, the weights and the rules
    (errors name the command's flags: `--weights`, `--tol`, `--max-iter`)."""
    if method not in METHODS:
        raise MergeError(f"method: expected one of {METHODS}, got {method!r}")
    if mode not in ("mergekit", "geodesic"):
        raise MergeError(f"mode: expected 'mergekit' or 'geodesic', got {mode!r}")
    many = method == "karcher" or (method == "lerp" and (weights is not None or count != 2))
    need = 3 if method == "task_slerp" else 2
    if (count < 2) if many else (count != need):
        wanted = "at least 2" if many else str(need)
        raise MergeError(f"{method}: expected {wanted} inputs, got {count}")
    if not (isinstance(tol, int | float) and math.isfinite(tol) and tol > 0):
        raise MergeError(f"--tol {tol!r}: expected a finite number > 0")
    if not (isinstance(max_iter, int) and max_iter >= 1):
        raise MergeError(f"--max-iter {max_iter!r}: expected an integer >= 1")
    if many:
        weights = [1.0] * count if weights is None else [float(w) for w in weights]
        finite = all(math.isfinite(w) for w in weights)
        if len(weights) != count or not finite or min(weights) < 0 or sum(weights) <= 0:
            raise MergeError(
                f"--weights {weights}: need {count} finite non-negative weights with a positive sum"
            )
        if any(p.t is not None for _, p in rules):
            raise MergeError(
                f"rules: {method} over several inputs takes weights, not t; use the ops "
                "lerp | keep_a | keep_b | spherical"
            )
    elif weights is not None:
        raise MergeError(f"--weights: {method} takes t, not weights")
    weights = None if weights is None else tuple(weights)
    return Merger(method, count, mode, weights, tol, max_iter)


def _jsonable(x: Any) -> Any:
    x = np.asarray(x).tolist()
    if isinstance(x, list):
        return [_jsonable(v) for v in x]
    return None if isinstance(x, float) and not np.isfinite(x) else round(x, 6)


def report_row(path: str, leaf: Any, plan: LeafPlan, stats: Mapping[str, Any]) -> dict[str, Any]:
    """One JSON-able line of a merge report (angles in degrees; NaN becomes null)."""
    return {
        "path": path,
        "shape": list(leaf.shape),
        "dtype": str(leaf.dtype),
        "op": plan.op,
        "t": None if plan.t is None else _jsonable(plan.t),
        "rule": plan.rule,
        "angle_deg": _jsonable(stats["angle_deg"]),
        "norms_in": _jsonable(stats["norms_in"]),
        "norm_out": _jsonable(stats["norm_out"]),
    }


def merge(
    method: str,
    trees: Sequence[Params],
    *,
    t: Any = 0.5,
    weights: Sequence[float] | None = None,
    mode: Mode = "mergekit",
    rules: Sequence[Any] | None = None,
    tol: float = 1e-5,
    max_iter: int = 10,
    with_report: bool = False,
) -> Any:
    """The merged tree, and with `with_report` also the report (a list of dicts, one per leaf).

    `trees` is `[a, b]` (lerp, slerp), `[base, a, b]` (task_slerp) or `[x1, ..., xm]` (karcher;
    lerp with weights). `t` is a finite number in `T_RANGE` (outside [0, 1] it extrapolates),
    or a traced scalar (then the caller checks it); `rules` are `[(regex, policy), ...]`
    (`compass_jax.merge.rules`); `keep_a`/`keep_b` keep the first/second model, never the base.
    """
    parsed = parse_rules(rules)
    check_t(t)
    merger = make_merger(
        method, len(trees), rules=parsed, mode=mode, weights=weights, tol=tol, max_iter=max_iter
    )
    leaves = check_trees(trees, input_names(method, len(trees)))
    num_layers = layer_count(leaves)
    merged, rows = {}, []
    for path, xs in leaves.items():
        xs = [x if isinstance(x, jax.Array) else jnp.asarray(x) for x in xs]
        plan = plan_leaf(path, xs[0].ndim, parsed, t, num_layers, mode)
        merged[path], stats, plan = merger(plan, xs)
        if with_report:
            rows.append(report_row(path, xs[0], plan, jax.device_get(stats)))
    result = tree.unflatten(merged)
    return (result, rows) if with_report else result


def lerp(a: Params, b: Params, t: Any = 0.5, *, rules: Sequence[Any] | None = None) -> Params:
    """`(1 - t) a + t b` per leaf (rules may still keep a or b for chosen paths)."""
    return merge("lerp", [a, b], t=t, rules=rules)


def slerp(
    a: Params,
    b: Params,
    t: Any = 0.5,
    *,
    mode: Mode = "mergekit",
    rules: Sequence[Any] | None = None,
) -> Params:
    """Spherical interpolation per leaf (in "geodesic" mode 0-D/1-D leaves are lerped unless a
    rule says otherwise; "mergekit" mode slerps every leaf, as mergekit does)."""
    return merge("slerp", [a, b], t=t, mode=mode, rules=rules)


def karcher_mean(
    trees: Sequence[Params],
    weights: Sequence[float] | None = None,
    *,
    tol: float = 1e-5,
    max_iter: int = 10,
    rules: Sequence[Any] | None = None,
) -> Params:
    """The weighted spherical mean of m trees per leaf (equal weights by default)."""
    return merge("karcher", trees, weights=weights, tol=tol, max_iter=max_iter, rules=rules)


def task_slerp(
    base: Params,
    a: Params,
    b: Params,
    t: Any = 0.5,
    *,
    mode: Mode = "mergekit",
    rules: Sequence[Any] | None = None,
) -> Params:
    """`base + slerp(a - base, b - base, t)` per leaf."""
    return merge("task_slerp", [base, a, b], t=t, mode=mode, rules=rules)

"""The merge of one leaf (an array of any shape, read as one flat vector), pure and jittable.

A merge runs in three steps, each a small jitted function:

1. `moments(kind, xs)`: the inner products the method needs (a Gram matrix), in float32. They are
   sums, so a leaf split into chunks or shards adds its parts up.
2. `coefficients(op, moments, t, weights)`: scalar algebra (`compass_jax.merge.spherical`) giving
   `c` with `merged = sum_i c_i x_i`, plus the report's angle and input norms.
3. `combine(xs, c, t, ends)`: that linear combination in the first input's dtype, and its squared
   norm.

On a sharded leaf under `jit`, step 1 is an all-reduce of scalars and step 3 elementwise: nothing
is gathered and the output keeps the input's sharding. Split this way, XLA compiles two trivial
programs per new shape rather than one large one; inside a caller's `jit` they simply inline.
`compass_jax.merge.stream` runs steps 1 and 3 in numpy over chunks of tensors on disk, around the
same step 2.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from compass_jax.merge.spherical import Mode, karcher_coefficients, slerp_coefficients

Leaf = Float[Array, "*s"]
Stats = dict[str, jax.Array]
OPS = ("spherical", "lerp", "keep_a", "keep_b")


class MergeError(ValueError):
    """Inputs that cannot be merged; the message names the leaf path, shape or dtype at fault."""


@dataclasses.dataclass(frozen=True)
class LeafOp:
    """What to do with one leaf; hashable, so it is a static argument of the jitted steps.

    kind: "pair" takes `[a, b]`, "task" `[base, a, b]`, "many" `[x1, ..., xm]` (with weights).
    op: "spherical" (slerp, task-vector slerp or Karcher mean, by kind), "lerp" (for "many": the
    weighted linear mean), "keep_a" / "keep_b" (the first / second model, never the base).
    """

    kind: str
    op: str
    mode: Mode = "mergekit"
    tol: float = 1e-5
    max_iter: int = 10

    def __post_init__(self):
        if self.kind not in ("pair", "task", "many"):
            raise MergeError(f"kind: expected pair | task | many, got {self.kind!r}")
        if self.op not in OPS:
            raise MergeError(f"op: expected one of {OPS}, got {self.op!r}")
        if self.mode not in ("mergekit", "geodesic"):
            raise MergeError(f"mode: expected 'mergekit' or 'geodesic', got {self.mode!r}")

    @property
    def ends(self) -> tuple[int, int] | None:
        """Indices of the inputs returned bit for bit at t = 0 and t = 1."""
        return {"pair": (0, 1), "task": (1, 2)}.get(self.kind)

    @property
    def kept(self) -> int | None:
        """For keep_a / keep_b: which model (0 or 1) is kept."""
        return {"keep_a": 0, "keep_b": 1}.get(self.op)

    @property
    def offset(self) -> int:
        """Index in the inputs of model `a` (the base comes first for task vectors)."""
        return int(self.kind == "task")


def check_leaves(xs: Sequence[Any], names: Sequence[str], path: str = "leaf") -> None:
    ref = xs[0]
    if not jnp.issubdtype(ref.dtype, jnp.floating):
        raise MergeError(f"{path}: dtype {ref.dtype} is not floating; only float leaves merge")
    for x, name in zip(xs[1:], names[1:], strict=True):
        if tuple(x.shape) != tuple(ref.shape):
            raise MergeError(
                f"{path}: shape {tuple(x.shape)} in {name}, {tuple(ref.shape)} in {names[0]}"
            )
        if x.dtype != ref.dtype:
            raise MergeError(f"{path}: dtype {x.dtype} in {name}, {ref.dtype} in {names[0]}")


def _gram(xs: Sequence[jax.Array]) -> jax.Array:
    return jnp.stack([jnp.stack([jnp.sum(x * y) for y in xs]) for x in xs])


@functools.partial(jax.jit, static_argnames=("kind",))
def moments(kind: str, xs: tuple[Leaf, ...]) -> dict[str, jax.Array]:
    """Additive inner products: `gram` of the inputs (of the task vectors for "task", with `sq`,
    the squared norms of a and b). Task vectors are differenced elementwise first: from the Gram
    matrix of the models they would cancel catastrophically when a model is close to its base."""
    x32 = [x.astype(jnp.float32) for x in xs]
    if kind == "task":
        base, a, b = x32
        sq = jnp.stack([jnp.sum(a * a), jnp.sum(b * b)])
        return {"gram": _gram([a - base, b - base]), "sq": sq}
    return {"gram": _gram(x32)}


def _angle_deg(aa: jax.Array, bb: jax.Array, ab: jax.Array) -> jax.Array:
    denom = jnp.sqrt(aa) * jnp.sqrt(bb)
    cos = jnp.clip(ab / jnp.where(denom > 0, denom, 1.0), -1.0, 1.0)
    return jnp.where(denom > 0, jnp.degrees(jnp.arccos(cos)), jnp.nan)


@functools.partial(jax.jit, static_argnames=("leaf_op",))
def coefficients(
    leaf_op: LeafOp, m: dict[str, jax.Array], t: Any, weights: Any = None
) -> tuple[Float[Array, " m"], Stats]:
    """`(c, stats)` with `merged = sum_i c_i x_i`; stats: `angle_deg` (between a and b, or their
    task vectors) and `norms_in` (of the models, never the base)."""
    gram = m["gram"]
    sq = m.get("sq", jnp.diag(gram))
    stats = {
        "angle_deg": _angle_deg(gram[0, 0], gram[1, 1], gram[0, 1]),
        "norms_in": jnp.sqrt(jnp.maximum(sq, 0.0)),
    }
    count = len(gram) + leaf_op.offset
    if leaf_op.kept is not None:
        return jax.nn.one_hot(leaf_op.kept + leaf_op.offset, count, dtype=jnp.float32), stats
    if leaf_op.kind == "many":
        w = jnp.asarray(weights, jnp.float32)
        if leaf_op.op == "lerp":
            return w / jnp.sum(w), stats
        return karcher_coefficients(gram, w, leaf_op.tol, leaf_op.max_iter), stats
    t = jnp.asarray(t, jnp.float32)
    if leaf_op.op == "lerp":
        s0, s1 = 1 - t, t
    else:
        s0, s1 = slerp_coefficients(gram[0, 0], gram[1, 1], gram[0, 1], t, leaf_op.mode)
    if leaf_op.kind == "task":
        # lerp of the models needs no base; slerp of task vectors is base + s0 da + s1 db.
        base = 0.0 * s0 if leaf_op.op == "lerp" else 1 - s0 - s1
        return jnp.stack([base, s0, s1]), stats
    return jnp.stack([s0, s1]), stats


@functools.partial(jax.jit, static_argnames=("ends",))
def combine(
    xs: tuple[Leaf, ...], c: Float[Array, " m"], t: Any, ends: tuple[int, int] | None
) -> tuple[Leaf, jax.Array]:
    """`(sum_i c_i x_i in the first input's dtype, its squared norm)`. At t = 0 / 1 the inputs
    named by `ends` come back bit for bit, whatever the formula rounds to."""
    out = sum(ci * x.astype(jnp.float32) for ci, x in zip(c, xs, strict=True)).astype(xs[0].dtype)
    if ends is not None:
        out = jnp.where(t == 0, xs[ends[0]], jnp.where(t == 1, xs[ends[1]], out))
    out32 = out.astype(jnp.float32)
    return out, jnp.sum(out32 * out32)


def merge_leaf(
    leaf_op: LeafOp, xs: Sequence[Leaf], t: Any = None, weights: Any = None
) -> tuple[Leaf, Stats]:
    """`(merged, stats)` for one leaf; stats adds `norm_out` to `coefficients`'s."""
    xs = tuple(xs)
    c, stats = coefficients(leaf_op, moments(leaf_op.kind, xs), t, weights)
    if leaf_op.kept is not None:
        keep = leaf_op.kept
        return xs[keep + leaf_op.offset], {**stats, "norm_out": stats["norms_in"][keep]}
    out, sq = combine(xs, c, t, leaf_op.ends)
    return out, {**stats, "norm_out": jnp.sqrt(sq)}


def merge_two(
    a: Leaf, b: Leaf, t: Any, *, op: str = "spherical", mode: Mode = "mergekit"
) -> tuple[Leaf, Stats]:
    """One leaf of `slerp` / `lerp`."""
    check_leaves((a, b), ("a", "b"))
    return merge_leaf(LeafOp("pair", op, mode), (a, b), t)


def merge_task(
    base: Leaf, a: Leaf, b: Leaf, t: Any, *, op: str = "spherical", mode: Mode = "mergekit"
) -> tuple[Leaf, Stats]:
    """One leaf of `task_slerp`: slerp between `a - base` and `b - base`, added back to base."""
    check_leaves((base, a, b), ("base", "a", "b"))
    return merge_leaf(LeafOp("task", op, mode), (base, a, b), t)


def merge_many(
    xs: Sequence[Leaf],
    weights: Float[Array, " m"],
    *,
    op: str = "spherical",
    tol: float = 1e-5,
    max_iter: int = 10,
) -> tuple[Leaf, Stats]:
    """One leaf of `karcher_mean` (op lerp: the weighted linear mean)."""
    check_leaves(xs, [f"trees[{i}]" for i in range(len(xs))])
    return merge_leaf(LeafOp("many", op, tol=tol, max_iter=max_iter), xs, None, weights)

"""Merging param pytrees along geodesics: pure, jittable functions over nested dicts of arrays.

Every method works leaf by leaf, reading a leaf as one flat vector:

- `lerp(a, b, t)`: `(1 - t) a + t b`.
- `slerp(a, b, t, mode="mergekit")`: mergekit's SLERP, reproduced exactly: the angle comes from
  normalised copies, the *unnormalised* tensors are interpolated, and it falls back to lerp when
  `|cos| > DOT_THRESHOLD`. `mode="geodesic"` moves the direction along the great circle and the
  norm linearly instead, so unit inputs give unit outputs.
- `karcher_mean(trees, weights)`: the weighted spherical (Fréchet) mean of the directions, scaled
  by the weighted mean of the norms, as mergekit's `karcher`.
- `task_slerp(base, a, b, t)`: `base + slerp(a - base, b - base, t)`.

`t` is a finite number in `T_RANGE` = [-1, 2] (outside [0, 1] it extrapolates; `check_t`);
`t = 0` returns `a` and `t = 1` returns `b` bit for bit; arithmetic is float32 and each leaf keeps
its dtype; sharded leaves stay sharded. Per-path rules (`compass_jax.merge.rules`) choose each
leaf's op and `t`; by default every leaf merges spherically in "mergekit" mode (as mergekit does),
while "geodesic" mode lerps 0-D/1-D leaves (norms, biases).
"""

from compass_jax.merge.leaf import LeafOp, MergeError, merge_leaf, merge_many, merge_task, merge_two
from compass_jax.merge.rules import T_RANGE, LeafPlan, Policy, RulesError, load_rules, parse_rules
from compass_jax.merge.spherical import (
    DOT_THRESHOLD,
    EPS,
    karcher_coefficients,
    slerp_coefficients,
)
from compass_jax.merge.trees import (
    METHODS,
    Merger,
    check_t,
    check_trees,
    karcher_mean,
    lerp,
    make_merger,
    merge,
    report_row,
    slerp,
    task_slerp,
)

__all__ = [
    "DOT_THRESHOLD",
    "EPS",
    "METHODS",
    "T_RANGE",
    "LeafOp",
    "LeafPlan",
    "MergeError",
    "Merger",
    "Policy",
    "RulesError",
    "check_t",
    "check_trees",
    "karcher_coefficients",
    "karcher_mean",
    "lerp",
    "load_rules",
    "make_merger",
    "merge",
    "merge_leaf",
    "merge_many",
    "merge_task",
    "merge_two",
    "parse_rules",
    "report_row",
    "slerp",
    "slerp_coefficients",
    "task_slerp",
]

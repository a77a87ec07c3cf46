"""Evaluation: metrics with their per-item evidence, suites, the runner, paired bootstrap
comparisons of models, and an MTEB-compatible encoder wrapper."""

from compass_jax.eval.bootstrap import Comparison, compare_models, contrast, seed_spread
from compass_jax.eval.runner import evaluate, to_markdown
from compass_jax.eval.suite import Suite, Task, load_suite

__all__ = [
    "Comparison",
    "Suite",
    "Task",
    "compare_models",
    "contrast",
    "evaluate",
    "load_suite",
    "seed_spread",
    "to_markdown",
]

"""Evaluation: metrics, suites, the runner, and an MTEB-compatible encoder wrapper."""

from compass_jax.eval.runner import evaluate, to_markdown
from compass_jax.eval.suite import Suite, Task, load_suite

__all__ = ["Suite", "Task", "evaluate", "load_suite", "to_markdown"]

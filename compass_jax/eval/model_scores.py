"""Suite results for many models of one architecture: merge sweeps, the demo's comparisons.

Models of one architecture share compiled programs (`encoder.embed_program`), so only the first
model of a sweep pays for compilation; results are kept per model, so a model named twice (the
base at t = 0 and as the reference) is evaluated once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from compass_jax.encoder import Encoder
from compass_jax.eval.runner import evaluate
from compass_jax.eval.suite import Suite
from compass_jax.resolve import resolve_model


class SuiteScores:
    """`results(model)` -> `{suite name: evaluate(...) results}`, computed once per model."""

    def __init__(
        self,
        suites: Mapping[str, Suite],
        *,
        cache_dir: str | None = None,
        dtype: str | None = None,
        progress: bool = False,
    ):
        self.suites = dict(suites)
        self.cache_dir, self.dtype, self.progress = cache_dir, dtype, progress
        self._results: dict[str, dict[str, dict]] = {}

    def results(self, model: str | os.PathLike) -> dict[str, dict]:
        # Keyed by the resolved directory: a workdir and its exported checkpoint are one model.
        key = os.path.abspath(resolve_model(model))
        if key not in self._results:
            encoder = Encoder.load(key, dtype=self.dtype)
            self._results[key] = {
                name: evaluate(encoder, suite, cache_dir=self.cache_dir, progress=self.progress)
                for name, suite in self.suites.items()
            }
        return self._results[key]

    def metrics(self) -> dict[str, Callable[[str], float]]:
        """One metric per suite, `model -> weighted average`: what `merge_sweep.sweep` takes."""
        return {
            name: (lambda model, name=name: self.results(model)[name]["average"])
            for name in self.suites
        }

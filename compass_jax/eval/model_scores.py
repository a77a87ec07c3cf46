"""Suite results for many models of one architecture: merge sweeps, the demo's comparisons.

Models of one architecture share compiled programs (`encoder.embed_program`), so only the first
model of a sweep pays for compilation; results are kept per model, so a model named twice (the
base at t = 0 and as the reference) is evaluated once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

from compass_jax.encoder import Encoder
from compass_jax.eval.runner import evaluate
from compass_jax.eval.suite import Suite
from compass_jax.resolve import resolve_model


class SuiteScores:
    """`results(model)` -> `{suite name: evaluate(...) results}`, each computed once per model
    and suite; `results(model, suites)` evaluates only the suites named (a model compared on
    one suite need not pay for the others)."""

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

    def results(
        self, model: str | os.PathLike, suites: Sequence[str] | None = None
    ) -> dict[str, dict]:
        # Keyed by the resolved directory: a workdir and its exported checkpoint are one model.
        key = os.path.abspath(resolve_model(model))
        names = list(self.suites) if suites is None else list(suites)
        unknown = sorted(set(names) - set(self.suites))
        if unknown:
            raise ValueError(f"no suite(s) {unknown}; the suites are {sorted(self.suites)}")
        done = self._results.setdefault(key, {})
        missing = [name for name in names if name not in done]
        if missing:
            encoder = Encoder.load(key, dtype=self.dtype)
            for name in missing:
                done[name] = evaluate(
                    encoder, self.suites[name], cache_dir=self.cache_dir, progress=self.progress
                )
        return {name: done[name] for name in names}

    def metrics(self) -> dict[str, Callable[[str], float]]:
        """One metric per suite, `model -> weighted average`: what `merge_sweep.sweep` takes."""
        return {
            name: (lambda model, name=name: self.results(model, [name])[name]["average"])
            for name in self.suites
        }

"""Training metrics: JSONL (machine-readable) and TensorBoard event files, from process 0."""

from __future__ import annotations

import logging
import math
import os

from compass_jax import jsonio

log = logging.getLogger(__name__)


def _strict(value):
    # A skipped step's loss can be NaN; strict JSON has no NaN, so it is logged as null (the
    # step's `skipped` metric says why).
    return None if isinstance(value, float) and not math.isfinite(value) else value


class MetricsLog:
    def __init__(self, workdir: str, *, resume_step: int, enabled: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if not enabled:
            return
        self._truncate(resume_step)
        try:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=resume_step)
        except ImportError:
            log.info("tensorboardX is not installed: no TensorBoard event files")

    def _truncate(self, resume_step: int) -> None:
        """Drop lines past the restored step: they belong to a run that was cut short."""
        if not os.path.exists(self.path):
            return
        kept = [r for r in jsonio.read_jsonl(self.path) if r["step"] <= resume_step]
        jsonio.write_jsonl(self.path, kept)

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": step, **{name: _strict(v) for name, v in metrics.items()}}
        jsonio.append_jsonl(self.path, record)
        if self._tb is not None:
            for name, value in metrics.items():
                if isinstance(value, int | float) and math.isfinite(value):
                    self._tb.add_scalar(name, value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()

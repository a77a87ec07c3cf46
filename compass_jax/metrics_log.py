"""Training metrics: JSONL (machine-readable) and TensorBoard event files, from process 0."""

from __future__ import annotations

import json
import logging
import os

from compass_jax.atomic import atomic_path

log = logging.getLogger(__name__)


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
        with open(self.path) as f:
            kept = [line for line in f if line.strip() and json.loads(line)["step"] <= resume_step]
        with atomic_path(self.path) as tmp, open(tmp, "w") as f:
            f.writelines(kept)

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        if self._tb is not None:
            for name, value in metrics.items():
                if isinstance(value, int | float):
                    self._tb.add_scalar(name, value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()

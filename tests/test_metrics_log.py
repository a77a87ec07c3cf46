"""metrics.jsonl: strict JSON (a skipped step's NaN loss becomes null) and cut back to the
restored step when a run resumes."""

import math

from compass_jax import jsonio
from compass_jax.metrics_log import MetricsLog


def test_non_finite_metrics_are_null_and_resume_truncates(tmp_path):
    log = MetricsLog(str(tmp_path), resume_step=0)
    for step in (1, 2, 3):
        log.write(step, {"loss": math.nan if step == 2 else 0.5, "skipped": int(step == 2)})
    log.close()
    rows = jsonio.read_jsonl(tmp_path / "metrics.jsonl")  # strict: a bare NaN would fail here
    assert [r["loss"] for r in rows] == [0.5, None, 0.5]
    MetricsLog(str(tmp_path), resume_step=2).close()
    assert [r["step"] for r in jsonio.read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2]

"""`benchmarks/gpu_suite.py` on a CPU: the smoke run goes through every phase with tiny models
and reports finite numbers under the expected keys (the FP8 and embedding phases against real
peers: `torch._scaled_mm` and sentence-transformers); without a GPU the real run skips cleanly;
a phase past its budget is killed; the trace reader and the clock verdict on known inputs."""

import gzip
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _gpu_timing as timing  # noqa: E402
import gpu_suite  # noqa: E402
from _gpu_train import LEVERS  # noqa: E402

from compass_jax import jsonio  # noqa: E402

pytest.importorskip("sentence_transformers")


def _numbers(value, where="report"):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _numbers(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _numbers(v, f"{where}[{i}]")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield where, value


def _positive(report, *paths):
    for path in paths:
        value = report
        for key in path.split("."):
            value = value[key]
        assert isinstance(value, int | float) and math.isfinite(value) and value > 0, (path, value)


def test_smoke_runs_every_phase_with_finite_numbers(tmp_path):
    out = tmp_path / "gpu.json"
    report = gpu_suite.main(["--smoke", "--out", str(out)])
    assert jsonio.read_json(out) == json.loads(jsonio.dumps(report))
    assert report["phases"] == [p.name for p in gpu_suite.PHASES]
    for phase in report["phases"]:
        assert not {"error", "killed", "skipped"} & set(report[phase]), (phase, report[phase])
    assert all(math.isfinite(v) for _, v in _numbers(report))

    probe = report["probe"]
    assert probe["backend"] == "cpu" and set(probe["noop_sync_s"]) == set(timing.WAITS)
    _positive(probe, "matmul_tflops")
    for phase in ("mfu_4b", "mfu_0.6b"):
        mfu = report[phase]
        assert mfu["not_available"] == ["cudnn_attention"]
        assert len(mfu["variants"]) == 1 and mfu["best"]["variant"] in mfu["variants"]
        assert set(mfu["best"]["levers"]) == set(LEVERS) - {"cudnn_attention"}
        for variant in mfu["variants"].values():
            _positive(variant, "step_s", "compile_s", "model_tflop_per_s", "hfu_of_measured_matmul")
        _positive(mfu, "flops_per_step.model_flops", "clocks.polled_s", "clocks.pipelined_s")
        assert mfu["clocks"]["trusted"] in ("polled", "device") and mfu["clocks"]["findings"]
    fp8 = report["fp8"]
    # Real kernels (or the dequantised fallback) against the simulation: the JAX W8A8 path
    # must sit closer to them than plain bf16 does.
    assert fp8["cosine"]["simulation_vs_real_fp8"]["mean"] >= 0.999
    assert fp8["simulation_closer_than_bf16"] and fp8["meets_target"]
    assert fp8["cosine"]["compass_jax_vs_transformers_bf16"]["mean"] >= 0.9999
    assert len(fp8["gemm"]["rows"]) == 4
    embed = report["embed"]
    assert embed["cosine_ours_vs_peer"]["mean"] >= 0.999
    _positive(embed, "ours_vs_peer", "compass_jax.texts_per_s", "sentence_transformers.texts_per_s")
    batch = report["max_batch"]
    assert len(batch["analysis"]) == 2 and batch["meets_target"]
    assert batch["largest_fitting_by_extrapolation"] >= batch["target"]
    _positive(batch, "run.step_s", "bytes_per_example")


def test_without_a_gpu_the_real_run_skips_and_exits_0(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    run = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_suite.py"), "--out", str(out)],
                         env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    report = jsonio.read_json(out)
    assert report == {"benchmark": "gpu_suite", "skipped": "no GPU (JAX backend: cpu)"}


def test_a_phase_past_its_budget_is_killed():
    args = gpu_suite.parse_args(["--smoke", "--phases", "mfu_4b"])
    report = gpu_suite.spawn_phase(gpu_suite.BY_NAME["mfu_4b"], args, 0.0, {}, grace_s=1.0)
    assert report["killed"].startswith("past its budget of 0 s")


def test_trace_reader_and_clock_verdict(tmp_path):
    device, host = 1, 2
    events = [
        {"ph": "M", "pid": device, "name": "process_name", "args": {"name": "/device:GPU:0"}},
        {"ph": "M", "pid": host, "name": "process_name", "args": {"name": "/host:CPU"}},
        {"ph": "M", "pid": device, "tid": 7, "name": "thread_name", "args": {"name": "Stream #1"}},
        {"ph": "M", "pid": device, "tid": 8, "name": "thread_name", "args": {"name": "XLA Ops"}},
        {"ph": "X", "pid": device, "tid": 7, "ts": 100.0, "dur": 50.0, "name": "gemm"},
        {"ph": "X", "pid": device, "tid": 7, "ts": 140.0, "dur": 30.0, "name": "gemm"},
        {"ph": "X", "pid": device, "tid": 7, "ts": 300.0, "dur": 100.0, "name": "norm"},
        {"ph": "X", "pid": device, "tid": 8, "ts": 90.0, "dur": 320.0, "name": "module"},
        {"ph": "X", "pid": host, "tid": 1, "ts": 0.0, "dur": 2e6, "name": "BlockHostUntilReady"},
    ]
    path = tmp_path / "perfetto_trace.json.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        json.dump({"traceEvents": events}, f)
    got = timing.activity(path)
    # Kernels cover [100, 170] and [300, 400] us; device events span [90, 410] us.
    assert got["kernel_busy_s"] == pytest.approx(170e-6)
    assert got["device_span_s"] == pytest.approx(320e-6)
    assert got["device_events"] == 4 and got["host_waits_s"] == {"BlockHostUntilReady": 2.0}

    # A blocking wait that wakes on a 2 s timer: quantised steps, a slow no-op, late host.
    verdict = timing.diagnose(
        blocking=[2.0001, 2.0003], polled=[0.71, 0.72], pipelined_s=0.70, device_s=0.69,
        noop={"blocking": [1.9, 2.0], "polled": [1e-5, 2e-5]}, fetched=[2.0002],
        dispatch=[0.5, 0.6],
    )  # fmt: skip
    assert verdict["trusted"] == "polled" and len(verdict["findings"]) == 5
    calm = timing.diagnose(
        blocking=[0.71], polled=[0.70], pipelined_s=0.7, device_s=0.69, noop=None
    )
    assert calm["findings"] == ["the clocks agree: step times are the device's own"]

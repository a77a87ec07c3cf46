"""Timing device work without being fooled by the host: the helpers behind `gpu_suite.py`'s
answer to "why was every step exactly 2.000 s?".

A step's time can be read five ways, and an artifact of the runtime shows up as a disagreement
between them:

- `blocking`: `perf_counter_ns` around dispatch + `block_until_ready` on the outputs (what the
  earlier `train_gpu.py` measured);
- `polled`: the same, but completion observed by spinning on `Array.is_ready()` instead of a
  blocking wait (a blocking wait that only wakes on a coarse timer rounds up; polling does not);
- `fetched`: the same, waiting by copying the outputs to the host (`device_get`, the sync a
  training loop makes when it logs a step's metrics);
- `pipelined`: `k` steps dispatched back to back, completion of the last polled, divided by `k`
  (the host's gaps between steps are hidden behind the device's work);
- `device`: the span of the step's kernels on the device timeline of a `jax.profiler` trace
  (perfetto JSON), independent of every host clock and wait.

`sync_latency` measures the wait itself on a no-op and on one matmul; `diagnose` turns the
readings into a verdict for the report; `probe_phase` is the suite's first phase (the device,
its driver and software, the waits, a bf16 matmul's rate). Not a benchmark itself;
`gpu_suite.py` imports it.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import json
import os
import pathlib
import re
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

Step = Callable[[], Any]  # dispatches one unit of device work, returns its outputs (no wait)


def _leaves(outputs) -> list:
    import jax

    return [x for x in jax.tree.leaves(outputs) if hasattr(x, "is_ready")]


def wait_polling(outputs) -> None:
    """Spin until every output is ready (no blocking wait on the runtime's events)."""
    leaves = _leaves(outputs)
    while not all(x.is_ready() for x in leaves):
        pass


def wait_blocking(outputs) -> None:
    import jax

    jax.block_until_ready(outputs)


def wait_fetching(outputs) -> None:
    """Copy the outputs to the host: the sync a training loop makes when it logs metrics."""
    import jax

    jax.device_get(outputs)


WAITS = {"blocking": wait_blocking, "polled": wait_polling, "fetched": wait_fetching}


def timed(step: Step, wait: str) -> tuple[Any, dict[str, float]]:
    """One step: `(outputs, {"dispatch_s", "total_s"})` from `perf_counter_ns`, completion
    observed by `wait` ("blocking" | "polled")."""
    start = time.perf_counter_ns()
    outputs = step()
    dispatched = time.perf_counter_ns()
    WAITS[wait](outputs)
    done = time.perf_counter_ns()
    return outputs, {"dispatch_s": (dispatched - start) / 1e9, "total_s": (done - start) / 1e9}


def pipelined(step: Step, k: int) -> float:
    """Seconds per step of `k` steps dispatched back to back, completion of the last polled."""
    start = time.perf_counter_ns()
    outputs = None
    for _ in range(k):
        outputs = step()
    wait_polling(outputs)
    return (time.perf_counter_ns() - start) / 1e9 / k


def host_clock() -> dict[str, Any]:
    """The host timer's resolution and how long a 50 ms sleep really takes."""
    info = time.get_clock_info("perf_counter")
    start = time.perf_counter_ns()
    time.sleep(0.05)
    return {
        "perf_counter": f"{info.implementation}, resolution {info.resolution} s",
        "sleep_50ms_s": round((time.perf_counter_ns() - start) / 1e9, 6),
    }


def sync_latency(make_step: Callable[[], Step], repeats: int) -> dict[str, list[float]]:
    """Wall seconds from dispatch to observed completion of a (warmed-up) step, by each way of
    waiting: a no-op that takes microseconds on the device shows the cost of the wait itself."""
    step = make_step()
    wait_blocking(step())
    return {
        name: [round(timed(step, name)[1]["total_s"], 6) for _ in range(repeats)] for name in WAITS
    }


# ---------------------------------------------------------------------------------------------
# Device timeline from a profiler trace
# ---------------------------------------------------------------------------------------------


def profile(step: Step, directory: str | pathlib.Path) -> tuple[dict[str, Any], pathlib.Path]:
    """One step under `jax.profiler.trace` (perfetto JSON next to the TensorBoard files); its
    device activity and the trace file."""
    import jax

    with jax.profiler.trace(str(directory), create_perfetto_trace=True):
        wait_blocking(step())
    found = sorted(pathlib.Path(directory).rglob("perfetto_trace.json.gz"))
    if not found:
        raise FileNotFoundError(f"{directory}: the profiler wrote no perfetto_trace.json.gz")
    return activity(found[-1]), found[-1]


def union_seconds(intervals: Sequence[tuple[float, float]]) -> float:
    """Total length covered by `(start, end)` intervals (overlaps counted once), in the
    intervals' unit."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def activity(path: str | pathlib.Path) -> dict[str, Any]:
    """Device-side numbers of a perfetto trace (microsecond timestamps): the span from the
    first to the last device event, the time covered by kernels on streams, the device's
    thread names, and the host's longest waits (what a blocking sync spent)."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    process, thread = {}, {}
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "process_name":
            process[e["pid"]] = e["args"]["name"]
        elif e.get("ph") == "M" and e.get("name") == "thread_name":
            thread[(e["pid"], e.get("tid"))] = e["args"]["name"]
    devices = {pid for pid, name in process.items() if name.startswith("/device:")}
    spans = [e for e in events if e.get("ph") == "X" and "dur" in e]
    on_device = [e for e in spans if e["pid"] in devices]
    name_of = lambda e: thread.get((e["pid"], e.get("tid")), "?")
    kernels = [(e["ts"], e["ts"] + e["dur"]) for e in on_device if name_of(e).startswith("Stream")]
    waits: dict[str, float] = {}
    for e in spans:
        if e["pid"] not in devices and any(w in e["name"] for w in ("Await", "Wait", "Block")):
            waits[e["name"]] = waits.get(e["name"], 0.0) + e["dur"] / 1e6
    span = None
    if on_device:
        span = max(e["ts"] + e["dur"] for e in on_device) - min(e["ts"] for e in on_device)
    return {
        "device_events": len(on_device),
        "device_span_s": round(span / 1e6, 6) if span is not None else None,
        "kernel_busy_s": round(union_seconds(kernels) / 1e6, 6) if kernels else None,
        "device_threads": sorted({name_of(e) for e in on_device})[:12],
        "host_waits_s": {
            k: round(v, 6) for k, v in sorted(waits.items(), key=lambda kv: -kv[1])[:5]
        },
    }


# ---------------------------------------------------------------------------------------------
# The verdict
# ---------------------------------------------------------------------------------------------


def _median(xs: Sequence[float] | None) -> float | None:
    return statistics.median(xs) if xs else None


def diagnose(
    *,
    blocking: Sequence[float],
    polled: Sequence[float],
    pipelined_s: float | None,
    device_s: float | None,
    noop: dict[str, Sequence[float]] | None,
    fetched: Sequence[float] = (),
    dispatch: Sequence[float] = (),
) -> dict[str, Any]:
    """Which clock to believe, and why: a blocking wait that costs far more than polling on a
    no-op, or step times that sit on one value while the device says otherwise, is an artifact
    of the runtime's wait, not the step's time."""
    b, p = _median(blocking), _median(polled)
    nb, np_ = _median((noop or {}).get("blocking")), _median((noop or {}).get("polled"))
    findings = []
    if nb is not None and np_ is not None and nb > 0.05 and nb > 10 * max(np_, 1e-6):
        findings.append(
            f"a blocking wait on a finished no-op takes {nb:.3f} s against {np_:.6f} s polled: "
            "the runtime's blocking wait wakes late (timer-driven), so blocking step times are "
            "rounded up"
        )
    if b and p and b > 1.2 * p:
        findings.append(f"blocking step {b:.3f} s vs polled {p:.3f} s: the wait inflates steps")
    d = _median(dispatch)
    if d and p and d > 0.5 * p:
        findings.append(f"dispatching a step (enqueueing its kernels) takes {d:.3f} of its "
                        f"{p:.3f} s: host launches are on the critical path (see the "
                        "command_buffers lever)")  # fmt: skip
    f = _median(fetched)
    if f and p and f > 1.2 * p:
        findings.append(f"fetching the metrics {f:.3f} s vs polled {p:.3f} s: a host sync per "
                        "step (as a loop logging every step makes) inflates steps")  # fmt: skip
    if len(blocking) >= 2 and b and max(blocking) - min(blocking) < 0.002 * b and b >= 1.0:
        findings.append(f"blocking step times all within 0.2% of {b:.3f} s: quantised")
    if device_s and p and p > 1.25 * device_s:
        findings.append(
            f"device span {device_s:.3f} s vs polled {p:.3f} s: the host observes completion late"
        )
    trusted = "polled"
    if device_s and p and p > 1.25 * device_s:
        trusted = "device"
    return {
        "dispatch_s": round(d, 6) if d else None,
        "blocking_s": round(b, 6) if b else None,
        "fetched_s": round(f, 6) if f else None,
        "polled_s": round(p, 6) if p else None,
        "pipelined_s": round(pipelined_s, 6) if pipelined_s else None,
        "device_s": round(device_s, 6) if device_s else None,
        "trusted": trusted,
        "findings": findings or ["the clocks agree: step times are the device's own"],
    }


# ---------------------------------------------------------------------------------------------
# The probe phase
# ---------------------------------------------------------------------------------------------

ENV_VARS = ("XLA_FLAGS", "XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_PREALLOCATE")
ENV_VARS += ("XLA_PYTHON_CLIENT_ALLOCATOR", "JAX_PLATFORMS", "CUDA_VISIBLE_DEVICES")


def software() -> dict[str, Any]:
    """Versions, the driver (from `nvidia-smi` through JAX's environment report), cuDNN as JAX
    loaded it, and the variables that steer XLA."""
    import jax

    text = jax.print_environment_info(return_string=True)
    driver = re.search(r"Driver Version:\s*([\d.]+)", text)
    out: dict[str, Any] = {
        "jax": jax.__version__,
        "jaxlib": importlib.metadata.version("jaxlib"),
        "driver": driver.group(1) if driver else None,
        "env": {k: os.environ.get(k) for k in ENV_VARS},
        "environment_info": text[-2500:],
    }
    try:  # private, so guarded: the report must not depend on it
        from jax._src.lib import cuda_versions

        out["cudnn"] = cuda_versions.cudnn_get_version() if cuda_versions else None
    except Exception as e:
        out["cudnn"] = f"unknown ({type(e).__name__})"
    return out


def probe_phase(opts, clock, save, context: dict) -> dict[str, Any]:
    """The device, its software, what a wait costs (a no-op and one matmul), and a bf16
    matmul's rate: the practical ceiling the MFU figures are also compared with."""
    import _gpu_train as gt
    import _machine as m
    import jax
    import jax.numpy as jnp

    device = jax.devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    report: dict[str, Any] = {
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "compute_capability": getattr(device, "compute_capability", None),
        "memory_limit_bytes": (stats or {}).get("bytes_limit"),
        "peak_bf16_tflops": gt.peak_tflops(device.device_kind),
        "software": software(),
        "machine": m.machine_info(with_torch=False),
        "host_clock": host_clock(),
    }
    save(report)
    if report["backend"] != "gpu" and not opts.smoke:
        return report  # the suite stops here: nothing to measure without a GPU
    noop = jax.jit(lambda x: x + 1)
    zero = jnp.zeros((), jnp.float32)
    report["noop_sync_s"] = sync_latency(lambda: lambda: noop(zero), 5)
    n = 256 if opts.smoke else 8192
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.bfloat16)
    matmul = jax.jit(lambda x: x @ x)
    report["matmul_sync_s"] = sync_latency(lambda: lambda: matmul(a), 3)
    seconds = pipelined(lambda: matmul(a), 20)
    report["matmul"] = {"n": n, "dtype": "bfloat16", "seconds": round(seconds, 6)}
    report["matmul_tflops"] = round(2 * n**3 / seconds / 1e12, 3)
    return report

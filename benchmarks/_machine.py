"""Shared helpers of the benchmarks: the machine description, pinning threads, waiting for a
quiet machine, CPU contention during a timed section, timers and the JSON report. The training
benchmarks' harness (synthetic pairs, the trainer's step, FLOP counts) is `_training`.

Not a benchmark itself; the scripts import it (it lives next to them, so running
`python benchmarks/<script>.py` from the repository root finds both it and `compass_jax`).
"""

from __future__ import annotations

import json
import os
import pathlib
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from compass_jax.machine import (  # noqa: E402  (re-exported for the scripts)
    cpu_description,
    load_average,
    machine_info,
    meminfo_gib,
)

__all__ = ["cpu_description", "load_average", "machine_info", "meminfo_gib"]


# ---------------------------------------------------------------------------------------------
# Logging, machine, load
# ---------------------------------------------------------------------------------------------


def logger(tag: str) -> Callable[[str], None]:
    def log(message: str) -> None:
        print(f"[{tag}] {message}", file=sys.stderr, flush=True)

    return log


def emit(report: dict[str, Any], out: str | None = None) -> None:
    """The report as indented JSON on stdout (and in `out`, written atomically)."""
    text = json.dumps(report, indent=2, default=_jsonable)
    print(text, flush=True)
    if out:
        tmp = f"{out}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        os.replace(tmp, out)


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def add_quiet_arguments(p) -> None:
    """`--max-load` / `--max-wait-s` (what `wait_for_quiet` takes) and `--out`."""
    p.add_argument(
        "--max-load",
        type=float,
        default=None,
        help="wait until the 1-min load average is below this before starting",
    )
    p.add_argument("--max-wait-s", type=float, default=1800)
    p.add_argument("--out", default=None, help="also write the JSON here")


def pin_threads(threads: int | None) -> str:
    """Restrict the process to `threads` CPUs before JAX starts (XLA sizes its thread pool from
    the schedulable CPUs); says what it did, for the report. None or enough threads: no change."""
    cpus = sorted(os.sched_getaffinity(0))
    if threads is None or threads >= len(cpus):
        return (
            f"threads ({threads or len(cpus)}) >= schedulable CPUs ({len(cpus)}): no affinity "
            "change; XLA's CPU client uses one intra-op thread per schedulable CPU"
        )
    os.sched_setaffinity(0, cpus[:threads])
    return f"process pinned to CPUs {cpus[:threads]} (sched_setaffinity) so XLA uses {threads}"


def wait_for_quiet(max_load: float | None, max_wait_s: float, log: Callable[[str], None]):
    """Sleep until the 1-minute load average drops below `max_load` (None: do not wait).
    Returns what happened, for the report; never fails (a busy machine is reported, not fatal)."""
    if max_load is None:
        return {"waited_s": 0.0, "load_average": load_average(), "quiet": None}
    start = time.time()
    while os.getloadavg()[0] >= max_load and time.time() - start < max_wait_s:
        log(f"load average {load_average()} >= {max_load}; waiting for a quieter machine")
        time.sleep(20)
    quiet = os.getloadavg()[0] < max_load
    return {
        "waited_s": round(time.time() - start, 1),
        "load_average": load_average(),
        "quiet": quiet,
    }


def open_report(
    benchmark: str, what: str, settings: dict[str, Any], args, log: Callable[[str], None]
) -> dict[str, Any]:
    """A report's head, once the machine is as quiet as `args` ask (`add_quiet_arguments`)."""
    quiet = wait_for_quiet(args.max_load, args.max_wait_s, log)
    return {
        "benchmark": benchmark,
        "what": what,
        "settings": settings,
        "machine": machine_info(with_torch=False),
        "quiet_wait": quiet,
    }


def close_report(report: dict[str, Any], out: str | None) -> None:
    """The load average at the end into the report; the report emitted (`emit`)."""
    report["machine"]["load_average_at_end"] = load_average()
    emit(report, out)


def cpu_snapshot() -> tuple[float, float, float, float]:
    """(wall s, machine busy CPU s, steal s, this process's CPU s incl. children) from
    /proc/stat."""
    with open("/proc/stat", encoding="utf-8") as f:
        user, nice, system, _, _, irq, softirq, steal = map(int, f.readline().split()[1:9])
    hz = os.sysconf("SC_CLK_TCK")
    own = os.times()
    busy = (user + nice + system + irq + softirq) / hz
    mine = own.user + own.system + own.children_user + own.children_system
    return time.perf_counter(), busy, steal / hz, mine


def contention_since(start: tuple[float, float, float, float]) -> dict[str, float]:
    """CPU used by other processes (and stolen by the hypervisor) since `start`, as a share of
    all CPUs' time: well above 0 means the timings were disturbed by other work."""
    end = cpu_snapshot()
    wall, busy, steal, own = (b - a for a, b in zip(start, end, strict=True))
    # /proc/stat counts every CPU of the machine, not only those this process may use.
    capacity = max(wall * (os.cpu_count() or 1), 1e-9)
    return {
        "wall_s": round(wall, 1),
        "other_processes_cpu_share": round(max(0.0, busy - own) / capacity, 3),
        "steal_share": round(steal / capacity, 3),
        "load_average_at_end": load_average(),
    }


def wall_times(fn: Callable[[], Any], repeats: int) -> list[float]:
    """Wall seconds of `repeats` calls of `fn` (the caller warms up)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def gflops(flop: float, seconds: float) -> float:
    return round(flop / seconds / 1e9, 2)


class Timer:
    """Wall and this process's CPU seconds (all threads) of a `with` block. On a shared machine
    the CPU seconds move much less with other people's load than the wall time does."""

    def __enter__(self) -> Timer:
        t = os.times()
        self._wall, self._cpu = time.perf_counter(), t.user + t.system
        return self

    def __exit__(self, *exc) -> None:
        t = os.times()
        self.wall = time.perf_counter() - self._wall
        self.cpu = t.user + t.system - self._cpu


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median over rounds of `a[i] / b[i]`: contenders timed back to back in the same round see
    the same machine load, so per-round ratios cancel most of its drift."""
    return round(statistics.median(x / y for x, y in zip(a, b, strict=True)), 4)


def paired_ratio_ci95(a: Sequence[float], b: Sequence[float]) -> list[float] | None:
    """95% interval of the ratio a / b from per-round pairs: a t-interval on the log ratios
    (rounds are few; their ratios vary by a few percent). None with fewer than 2 rounds."""
    from scipy import stats

    logs = np.log(np.asarray(a, float) / np.asarray(b, float))
    if len(logs) < 2:
        return None
    half = stats.t.ppf(0.975, len(logs) - 1) * logs.std(ddof=1) / np.sqrt(len(logs))
    return [round(float(np.exp(logs.mean() + sign * half)), 4) for sign in (-1, 1)]


def summarize(times: Sequence[float]) -> dict[str, Any]:
    return {
        "median_s": round(statistics.median(times), 4),
        "min_s": round(min(times), 4),
        "max_s": round(max(times), 4),
        "times_s": [round(t, 4) for t in times],
    }

"""The GPU figures of issue 12 in one command: model FLOPs utilisation of the GradCache step for
Qwen3-4B- and Qwen3-0.6B-sized encoders (seq 512, bf16 over float32 masters) with each lever
measured as a variant, FP8 through real kernels against compass-jax's W8A8 simulation,
embedding throughput against sentence-transformers, and the largest global batch one card
trains (seq 128). Every model is a random init of the named size built on the machine, so
nothing large travels to it; a run needs no network.

Phases run in order of value, each in its own process (a clean card for each, JAX and PyTorch
never sharing one allocator, and a hard deadline: a phase past its budget is killed and what it
had measured is kept). Budgets on one H200, compiles included (estimates until a run replaces
them; `phase_s` in the report is what each took):

- `probe` (budget 25 s, estimate 15): device, driver, cuDNN, versions, XLA flags; a blocking
  wait vs polling on a no-op and on a matmul; a bf16 matmul's rate (the practical ceiling).
- `mfu_4b` (230 s, ~220): the tuned bundle, the default step, the bundle without each of its
  levers, then extras (`_gpu_train.plan`), while the budget lasts; the first variant with all
  clocks and a profiled step. Setup ~25 s, a compile 60-80 s, a step ~3 s: two variants.
- `mfu_0.6b` (100 s, ~100): the default first, then the same plan; a compile 30-40 s, a step
  ~0.6 s: two to three variants.
- `fp8` (45 s, ~35): a small Qwen3 exported as bf16 and FP8; `torch._scaled_mm` vs the W8A8
  simulation; FP8 vs bf16 GEMMs at the 0.6B and 4B shapes.
- `embed` (60 s, ~55): 4,096 synthetic texts, batch 64, `Encoder` vs sentence-transformers.
- `max_batch` (110 s, ~100): 65,536 x seq 128 compiled against the card's memory, one real
  step at the largest size the time allows (the first phase to lose time when others overrun).

Levers (`_gpu_train.LEVERS`, each a `compass_jax.train.StepSpec` / `TrainConfig` change):
`cudnn_attention` (fused flash attention, `ModelConfig.attention_impl`), `cast_params_once` (bf16
copies of the float32 matmul kernels made once per step instead of at every chunk),
`chunk_x2` (GradCache chunk doubled), `command_buffers` (CUDA graphs around the GradCache loops
too), `latency_hiding_scheduler` and `no_triton_gemm` (XLA GPU options of the step's compile),
`remat_dots` (a `jax.checkpoint` policy over the embedding).
Clocks (`_gpu_timing`): every step is timed by polling for completion; the first variant of an
MFU phase also by blocking waits, by a host fetch of its metrics, back to back, and on the device
timeline of a profiler trace, and `clocks.findings` says which to believe (the question behind
the earlier "every step exactly 2.000 s").

A phase gets `min(budget, time left - the minimum every later phase needs)`; time a phase does
not use flows to the next ones. The whole report is printed (indented JSON) and written to
`--out` after every phase, so the last document is the most complete and a run cut short still
leaves its results. `--trace` also keeps the profiled step of each MFU phase as a perfetto trace
next to `--out` (open it at ui.perfetto.dev). Without a GPU it prints `{"skipped": reason}` and
exits 0; `--smoke` runs every phase's code paths on any backend with tiny models, in-process.

    python benchmarks/gpu_suite.py --out gpu.json --trace     # one H200: <= 8 minutes
    python benchmarks/gpu_suite.py --smoke                    # every code path on a CPU
    python benchmarks/gpu_suite.py --phases mfu_0.6b --phase-budgets mfu_0.6b=400 \
        --tuned cudnn_attention,chunk_x2 --extras remat_dots   # more variants of one phase
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import json
import math
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from typing import Any

import _machine as m  # noqa: F401  (puts the repository root on sys.path)

from compass_jax import jsonio

GRACE_S = 15.0  # past its budget, a phase's process gets this long to write before it is killed
TRAINING_ENV = {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.95"}  # JAX's 0.75 would cap the search
SHARED_ENV = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}  # leave the card to PyTorch too


@dataclasses.dataclass(frozen=True)
class Phase:
    name: str
    budget_s: float
    min_s: float  # less than this left: skipped
    env: dict[str, str]
    code: str  # "module:function", called as `function(*args, opts, clock, save, context)`
    args: tuple = ()

    def function(self):
        """Imported only where the phase runs (the parent process never imports JAX)."""
        module, name = self.code.split(":")
        return functools.partial(getattr(importlib.import_module(module), name), *self.args)


PHASES = (
    Phase("probe", 25, 10, SHARED_ENV, "_gpu_timing:probe_phase"),
    Phase("mfu_4b", 230, 120, TRAINING_ENV, "_gpu_mfu:mfu_phase", ("4b",)),
    Phase("mfu_0.6b", 100, 50, TRAINING_ENV, "_gpu_mfu:mfu_phase", ("0.6b",)),
    Phase("fp8", 45, 30, SHARED_ENV, "_gpu_fp8:fp8_phase"),
    Phase("embed", 60, 40, SHARED_ENV, "_gpu_embed:embed_phase"),
    Phase("max_batch", 110, 60, TRAINING_ENV, "_gpu_max_batch:max_batch_phase"),
)
BY_NAME = {p.name: p for p in PHASES}


def finite(value: Any, where: str = "report", found: list | None = None) -> Any:
    """`value` with every non-finite float replaced by None (its path appended to `found`):
    the report is strict JSON whatever a phase measured."""
    if isinstance(value, dict):
        return {k: finite(v, f"{where}.{k}", found) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v, f"{where}[{i}]", found) for i, v in enumerate(value)]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        if found is not None:
            found.append(where)
        return None
    return value


def publish(report: dict[str, Any], out: str | None) -> None:
    found: list[str] = []
    clean = finite(report, found=found)
    if found:
        clean["non_finite_values"] = found
    print(jsonio.dumps(clean, indent=2), flush=True)
    if out:
        jsonio.write_json(out, clean, indent=2)


def run_phase(name: str, opts, budget_s: float, context: dict, result: str | None) -> dict:
    """Run phase `name` here; its partial report is written to `result` (when given) after every
    step it saves, so a kill keeps what was measured."""
    from _gpu_train import Clock

    clock, last, cpu = Clock(budget_s), {}, time.process_time()

    def save(report: dict) -> None:
        last["report"] = report
        if result:
            jsonio.write_json(result, finite(report))

    try:
        report = BY_NAME[name].function()(opts, clock, save, context)
    except Exception:
        report = {**last.get("report", {}), "error": traceback.format_exc()[-3000:]}
        print(report["error"], file=sys.stderr)
    report["phase_s"] = round(clock.elapsed(), 1)
    report["phase_cpu_s"] = round(time.process_time() - cpu, 1)  # all threads of this process
    save(report)
    return report


def spawn_phase(phase: Phase, args, budget_s: float, context: dict, grace_s=GRACE_S) -> dict:
    """Run `phase` in a child process with its environment and a hard deadline."""
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "result.json")
        command = [sys.executable, os.path.abspath(__file__), "--worker", phase.name,
                   "--result", result, "--phase-budget-s", f"{budget_s:.1f}",
                   "--context", json.dumps(context), *worker_flags(args, phase)]  # fmt: skip
        env = {**os.environ, **{k: os.environ.get(k, v) for k, v in phase.env.items()}}
        # Own session: the deadline kills the phase's whole process group, nothing else.
        child = subprocess.Popen(command, env=env, stdout=sys.stderr, start_new_session=True)
        try:
            code = child.wait(timeout=budget_s + grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            code = child.wait()
            code = "killed"
        report = jsonio.read_json(result) if os.path.isfile(result) else {}
    if code == "killed":
        report["killed"] = f"past its budget of {budget_s:.0f} s (+{grace_s:.0f} s grace)"
    elif code != 0:
        report.setdefault("error", f"the phase's process exited with status {code}")
    return report


def worker_flags(args, phase: Phase) -> list[str]:
    flags = ["--smoke"] * args.smoke + ["--tuned", ",".join(args.tuned)]
    flags += ["--extras", ",".join(args.extras)]
    if args.trace and args.out and phase.name.startswith("mfu_"):
        flags += ["--trace-out", trace_path(args.out, phase.name)]
    return flags


def trace_path(out: str, phase: str) -> str:
    path = pathlib.Path(out)
    return str(path.with_name(f"{path.stem}_trace_{phase}.json.gz"))


def learn(context: dict, name: str, report: dict) -> None:
    """What later phases take from an earlier one's report."""
    if name == "probe":
        keys = ("peak_bf16_tflops", "matmul_tflops", "noop_sync_s")
        context.update({k: report[k] for k in keys if report.get(k) is not None})
    if name == "mfu_0.6b" and "best" in report:
        context["best_levers"] = report["best"]["levers"]
        context["hardware_flops_per_s"] = report["best"]["hardware_flops_per_s"]


def share_compiles(directory: str) -> None:
    """A persistent compilation cache (unless one is set): phases that compile the same program
    (a smoke run's sizes coincide on purpose) compile it once."""
    import jax

    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", directory)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.worker:
        opts = argparse.Namespace(smoke=args.smoke, tuned=args.tuned, extras=args.extras)
        if args.trace_out:
            opts.keep_trace = lambda path: shutil.copyfile(path, args.trace_out)
        return run_phase(args.worker, opts, args.phase_budget_s, json.loads(args.context),
                         args.result)  # fmt: skip
    start, context = time.perf_counter(), {}
    inline = args.workers == "inline" or (args.workers is None and args.smoke)
    with tempfile.TemporaryDirectory() as cache:
        if inline:
            share_compiles(cache)
        return run_phases(args, inline, start, context)


def run_phases(args, inline: bool, start: float, context: dict) -> dict[str, Any]:
    report: dict[str, Any] = {"benchmark": "gpu_suite", "smoke": args.smoke,
                              "budget_s": args.budget_s, "phases": args.phases,
                              "workers": "inline" if inline else "process"}  # fmt: skip
    phases = [dataclasses.replace(BY_NAME[n], **args.phase_budgets.get(n, {})) for n in args.phases]
    for i, phase in enumerate(phases):
        left = args.budget_s - (time.perf_counter() - start)
        budget = min(phase.budget_s, left - sum(p.min_s for p in phases[i + 1 :]))
        if budget < phase.min_s:
            report[phase.name] = {"skipped": f"time budget: {budget:.0f} s < {phase.min_s:.0f} s"}
            publish(report, args.out)
            continue
        print(f"[gpu_suite] {phase.name}: budget {budget:.0f} s", file=sys.stderr, flush=True)
        tic = time.perf_counter()
        if inline:
            opts = argparse.Namespace(smoke=args.smoke, tuned=args.tuned, extras=args.extras)
            result = run_phase(phase.name, opts, budget, dict(context), None)
        else:
            result = spawn_phase(phase, args, budget, context)
        result["wall_s"] = round(time.perf_counter() - tic, 1)
        report[phase.name] = result
        if phase.name == "probe" and result.get("backend") != "gpu" and not args.smoke:
            why = result.get("error") or f"JAX backend: {result.get('backend')}"
            report = {"benchmark": "gpu_suite", "skipped": f"no GPU ({why.splitlines()[-1]})"}
            publish(report, args.out)
            return report
        learn(context, phase.name, result)
        report["elapsed_s"] = round(time.perf_counter() - start, 1)
        publish(report, args.out)
    return report


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from _gpu_train import EXTRAS, LEVERS, TUNED

    def levers(text: str) -> list[str]:
        names = [x for x in text.split(",") if x]
        unknown = [x for x in names if x not in LEVERS]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown levers {unknown}; known: {sorted(LEVERS)}")
        return names

    def phase_list(text: str) -> list[str]:
        names = [x for x in text.split(",") if x]
        unknown = [x for x in names if x not in BY_NAME]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown phases {unknown}; known: {list(BY_NAME)}")
        return ["probe", *(n for n in BY_NAME if n in names and n != "probe")]

    def budgets(text: str) -> dict[str, dict[str, float]]:
        out = {}
        for item in filter(None, text.split(",")):
            name, _, seconds = item.partition("=")
            if name not in BY_NAME or not seconds.replace(".", "", 1).isdigit():
                raise argparse.ArgumentTypeError(f"expected NAME=SECONDS with NAME in "
                                                 f"{list(BY_NAME)}, got {item!r}")  # fmt: skip
            out[name] = {
                "budget_s": float(seconds),
                "min_s": min(float(seconds), BY_NAME[name].min_s),
            }
        return out

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="also write the JSON report here")
    p.add_argument("--trace", action="store_true", help="keep the MFU phases' profiler traces")
    p.add_argument("--smoke", action="store_true", help="tiny models, any backend, seconds")
    p.add_argument("--budget-s", type=float, default=480.0, help="the whole run (default 8 min)")
    p.add_argument(
        "--phases",
        type=phase_list,
        default=list(BY_NAME),
        help=f"a comma-separated subset of {list(BY_NAME)} (probe always runs)",
    )
    p.add_argument(
        "--phase-budgets",
        type=budgets,
        default={},
        help="NAME=SECONDS,... replacing phases' budgets (a phase run alone, longer)",
    )
    p.add_argument("--tuned", type=levers, default=list(TUNED), help="the tuned lever bundle")
    p.add_argument("--extras", type=levers, default=list(EXTRAS), help="levers tried on top")
    p.add_argument(
        "--workers",
        choices=("process", "inline"),
        default=None,
        help="a process per phase, or all in this one (the default with --smoke)",
    )
    for hidden in ("--worker", "--result", "--context", "--trace-out"):
        p.add_argument(hidden, default=None, help=argparse.SUPPRESS)
    p.add_argument("--phase-budget-s", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.context = args.context or "{}"
    return args


if __name__ == "__main__":
    main()

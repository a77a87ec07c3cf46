"""Peak memory of one training step vs global batch size, with GradCache and without.

For each global batch size in `--batches` (default 128, 256, 512, 1024) a *fresh subprocess*
loads the model (default all-MiniLM-L6-v2; `--model tiny` for a small random BERT), builds the
training state on one device (`sharding.make_mesh(1, 1, devices=jax.devices()[:1])`), tokenises
real batches of pairs with one hard negative at `--seq` tokens through the library's data path,
compiles the jitted step and runs `--steps` steps (the first one's compile included). It then
reports the whole process's peak resident memory, `resource.getrusage(RUSAGE_SELF).ru_maxrss`,
and on a GPU the device's `memory_stats()["peak_bytes_in_use"]`. A baseline subprocess that only
loads the model and the tokenizer and builds the training state (params + AdamW moments) is
subtracted.

Two series:

* `gradcache`: `gradcache_chunk=--chunk` (fixed). Expected growth: `b x d` (embeddings, their
  gradient, the token ids), since only one chunk's activations are ever live.
* `plain`: `gradcache_chunk=None`, the whole batch embedded with every activation kept for the
  backward pass. Expected growth: `b x activations`. The parent watches the child's RSS and kills it
  once it passes `--cap-gb` (default 12, lowered to what the machine has free); that batch and the
  larger ones are reported as "exceeded". For those, a compile-only subprocess still reports what
  XLA's buffer assignment would need (`xla_*_bytes`, known without running). With one point under
  the cap there is no slope; `rss_above_baseline_mib_per_1k_examples_each` gives each point's
  growth over the baseline per 1,000 examples instead.

Every point also carries XLA's own buffer sizes of the compiled step (temporaries at its peak plus
arguments and outputs), a noise-free view of the same growth, and the peak RSS of the steps alone
(`VmHWM` after the compiler's heap is trimmed and the counter reset: the compile's own peak, a few
hundred MB whatever the batch, can otherwise hide the step's). `--xla-batches` (default 2048, 4096,
8192) extends both series by compile-only sizing, which takes seconds where a real step at 8192
takes many minutes on a 2-core CPU (a GradCache step costs ~8 GFLOP per triple at seq 32); pass the
whole sweep to `--batches` to measure RSS there too (about an hour and a half here).
Slopes are least-squares fits, in MiB per 1,000 examples of global batch.

Run from the repository root (JSON on stdout, progress on stderr; about 15 minutes on 2 cores):

    python benchmarks/train_memory.py --out /tmp/train_memory.json
    python benchmarks/train_memory.py --batches 256,512,1024,2048,4096,8192 --xla-batches ''
    python benchmarks/train_memory.py --model tiny --batches 256,512 --xla-batches ''  # quick
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from typing import Any

import _machine as m
import _training as tr
import numpy as np

from compass_jax import jsonio

log = m.logger("train_memory")
GIB, MIB = 2**30, 2**20


# ---------------------------------------------------------------------------------------------
# Child: one configuration in a fresh process
# ---------------------------------------------------------------------------------------------


def device_peak() -> int | None:
    import jax

    stats = jax.devices()[0].memory_stats() if jax.default_backend() != "cpu" else None
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def child(job: dict[str, Any]) -> dict[str, Any]:
    warnings.filterwarnings("ignore")  # donation notices on CPU etc.
    from compass_jax.interop.tokenizer import load_tokenizer
    from compass_jax.losses import LossSettings

    model_cfg, params, model_dir, pooling = tr.load(job["model"])
    tokenizer = load_tokenizer(model_dir)
    chunk = job["chunk"] if job["mode"] == "gradcache" else None
    harness = tr.Harness.create(
        model_cfg, params, pooling, chunk=chunk, loss=LossSettings(temperature=0.05),
        dtype=job["dtype"],
    )  # fmt: skip
    del params
    out: dict[str, Any] = {"setup_peak_rss_bytes": _maxrss()}
    if job["mode"] == "baseline":
        out.update(peak_rss_bytes=_maxrss(), device_peak_bytes=device_peak())
        return out
    locals_ = tr.tokenized_batches(
        job["data"],
        tokenizer,
        batch_size=job["batch"],
        count=job["steps"],
        seq=job["seq"],
        task="retrieval",
    )
    batches = [harness.put(b) for b in locals_]
    del locals_
    out.update(harness.compile(batches[0]))
    out["after_compile_peak_rss_bytes"] = _maxrss()
    if job["compile_only"]:
        return out
    out["before_steps_rss_bytes"] = reset_peak()
    times = []
    for i, batch in enumerate(batches):
        seconds, metrics = harness.run(batch)
        times.append(round(seconds, 2))
        print(f"  step {i + 1}: {seconds:.1f} s, loss {metrics['loss']:.4f}", file=sys.stderr)
    out.update(
        peak_rss_bytes=_maxrss(),
        steps_peak_rss_bytes=_status("VmHWM"),
        device_peak_bytes=device_peak(),
        step_s=times,
        first_loss=metrics["loss"],
    )
    return out


def _maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _status(field: str, pid: int | str = "self") -> int | None:
    """A `/proc/<pid>/status` memory field in bytes."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak() -> int | None:
    """Give the compiler's freed heap back to the OS and restart the kernel's peak-RSS counter
    (`VmHWM`), so the steps' own peak can be read apart from the compile's; returns the RSS the
    steps start from. `ru_maxrss` (the whole-process figure) is not affected."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status("VmRSS")


# ---------------------------------------------------------------------------------------------
# Parent: spawn, watch, fit
# ---------------------------------------------------------------------------------------------


def rss_of(pid: int) -> int:
    return _status("VmRSS", pid) or 0


def spawn(job: dict[str, Any], cap_bytes: int | None) -> dict[str, Any]:
    """Run one child; kill it if its RSS passes `cap_bytes`."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(job)]
    tic = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    sampled, killed = 0, False
    while proc.poll() is None:
        rss = rss_of(proc.pid)
        sampled = max(sampled, rss)
        if cap_bytes and rss > cap_bytes:
            proc.kill()  # the child we started, by its pid
            killed = True
            break
        time.sleep(0.05)
    stdout, _ = proc.communicate()
    wall = round(time.perf_counter() - tic, 1)
    if killed:
        return {"status": "exceeded", "killed_at_rss_bytes": sampled, "wall_s": wall}
    if proc.returncode != 0:
        return {"status": "error", "returncode": proc.returncode, "wall_s": wall}
    result = json.loads(stdout.strip().splitlines()[-1])
    exhausted = "RESOURCE_EXHAUSTED" in str(result.get("error", ""))
    status = "exceeded" if exhausted else ("error" if "error" in result else "ok")
    return {"status": status, **result, "sampled_max_rss_bytes": sampled, "wall_s": wall}


def slope_mib_per_1k(points: Sequence[tuple[int, float]]) -> float | None:
    """Least-squares slope of bytes vs batch, in MiB per 1,000 examples."""
    if len(points) < 2:
        return None
    b, y = np.array(points, np.float64).T
    return round(float(np.polyfit(b, y, 1)[0]) * 1000 / MIB, 1)


def series(args, mode: str, base: dict[str, Any], cap: int | None, data: str, model: str):
    rows, exceeded = [], False
    points = [(b, False) for b in args.batches] + [(b, True) for b in args.xla_batches]
    for batch, sizing_only in points:
        compile_only = sizing_only or exceeded
        job = {
            "mode": mode,
            "model": model,
            "seq": args.seq,
            "chunk": args.chunk,
            "batch": batch,
            "steps": args.steps,
            "data": data,
            "dtype": args.dtype,
            "compile_only": compile_only,
        }
        if exceeded and not args.xla_beyond_cap:
            rows.append({"batch": batch, "status": "exceeded (not run: a smaller batch did)"})
            continue
        log(f"{mode} batch {batch}{' (compile only)' if compile_only else ''} ...")
        r = spawn(job, None if compile_only else cap)
        row = {"batch": batch, **r}
        if compile_only and r["status"] == "ok":
            row["status"] = (
                "exceeded (compile-only: XLA buffer sizes)"
                if exceeded
                else "compile-only (XLA buffer sizes)"
            )
        elif r["status"] == "ok":
            row["above_baseline_bytes"] = r["peak_rss_bytes"] - base["peak_rss_bytes"]
            if r.get("steps_peak_rss_bytes") and r.get("before_steps_rss_bytes"):
                row["steps_above_start_bytes"] = (
                    r["steps_peak_rss_bytes"] - r["before_steps_rss_bytes"]
                )
            if r.get("device_peak_bytes") is not None and base.get("device_peak_bytes"):
                row["device_above_baseline_bytes"] = (
                    r["device_peak_bytes"] - base["device_peak_bytes"]
                )
            row["examples_per_s_last_step"] = round(batch / r["step_s"][-1], 1)
        elif r["status"] == "exceeded" and "killed_at_rss_bytes" in r and args.xla_beyond_cap:
            log(f"{mode} batch {batch} (compile only, after the kill) ...")
            sized = spawn({**job, "compile_only": True}, None)
            row.update({k: v for k, v in sized.items() if k.startswith("xla_")})
        log(f"  -> {_short(row)}")
        rows.append(row)
        exceeded = exceeded or r["status"] == "exceeded"
        if r["status"] == "error":
            break
    return rows


def _short(row: dict[str, Any]) -> str:
    keys = (
        "status",
        "peak_rss_bytes",
        "above_baseline_bytes",
        "steps_peak_rss_bytes",
        "xla_total_bytes",
        "killed_at_rss_bytes",
    )
    return ", ".join(
        f"{k}={row[k] / GIB:.2f} GiB" if k.endswith("bytes") else f"{k}={row[k]}"
        for k in keys
        if k in row
    )


def fits(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rows if r["status"] == "ok"]
    xla = [r for r in rows if "xla_total_bytes" in r]
    out = {
        "rss_mib_per_1k_examples": slope_mib_per_1k(
            [(r["batch"], r["peak_rss_bytes"]) for r in ok]
        ),
        "steps_rss_mib_per_1k_examples": slope_mib_per_1k(
            [(r["batch"], r["steps_peak_rss_bytes"]) for r in ok if r.get("steps_peak_rss_bytes")]
        ),
        "xla_total_mib_per_1k_examples": slope_mib_per_1k(
            [(r["batch"], r["xla_total_bytes"]) for r in xla]
        ),
        "points_rss": len(ok),
        "points_xla": len(xla),
    }
    if ok:  # with one point no slope: the growth over the baseline, per 1k examples
        out["rss_above_baseline_mib_per_1k_examples_each"] = [
            round(r["above_baseline_bytes"] / r["batch"] * 1000 / MIB, 1) for r in ok
        ]
    device = [(r["batch"], r["device_peak_bytes"]) for r in ok if r.get("device_peak_bytes")]
    if device:
        out["device_mib_per_1k_examples"] = slope_mib_per_1k(device)
    return out


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        default="all-MiniLM-L6-v2",
        help=f"bundled name or HF dir; '{tr.TINY}' = a small random BERT (2 x 32)",
    )
    p.add_argument("--batches", default="128,256,512,1024", type=ints, help="batches run for real")
    p.add_argument(
        "--xla-batches",
        default="2048,4096,8192",
        type=ints,
        help="larger batches sized by XLA's compile-time analysis only ('' = none)",
    )
    p.add_argument("--chunk", type=int, default=64, help="GradCache chunk (global rows)")
    p.add_argument("--seq", type=int, default=32, help="tokens per query / document")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--cap-gb", type=float, default=12.0, help="stop the plain series above this")
    p.add_argument(
        "--no-xla-beyond-cap",
        dest="xla_beyond_cap",
        action="store_false",
        help="skip the compile-only sizing of batches above the cap",
    )
    p.add_argument("--modes", default="gradcache,plain", type=lambda s: s.split(","))
    m.add_quiet_arguments(p)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    if args.child:
        job = json.loads(args.child)
        try:
            result = child(job)
        except Exception as e:  # an OOM on a GPU lands here; the parent reads it
            result = {"error": f"{type(e).__name__}: {str(e)[:2000]}"}
        print(jsonio.dumps(result), flush=True)
        return None

    quiet = m.wait_for_quiet(args.max_load, args.max_wait_s, log)
    machine = m.machine_info(with_torch=False)
    available = (machine["mem_available_gib"] or 1e9) * GIB
    # Leave 2 GiB to everyone else on a shared machine.
    cap = int(min(args.cap_gb * GIB, available - 2 * GIB))
    with tempfile.TemporaryDirectory(prefix="train_memory_") as tmp:
        data = str(tr.make_pairs(os.path.join(tmp, "pairs.jsonl"), n=4096))
        model = args.model
        start = m.cpu_snapshot()
        log("baseline (model + training state, no step) ...")
        base_job = {
            "mode": "baseline",
            "model": model,
            "seq": args.seq,
            "chunk": args.chunk,
            "batch": 0,
            "steps": 0,
            "data": data,
            "dtype": args.dtype,
            "compile_only": False,
        }
        base = spawn(base_job, None)
        if base["status"] != "ok":
            raise SystemExit(f"baseline child failed: {base}")
        log(f"  -> baseline peak RSS {base['peak_rss_bytes'] / GIB:.2f} GiB")
        results = {mode: series(args, mode, base, cap, data, model) for mode in args.modes}
    report = {
        "benchmark": "train_memory",
        "what": "peak memory of a training step vs global batch, GradCache vs plain",
        "settings": {
            "model": args.model,
            "seq": args.seq,
            "hard_negatives": 1,
            "chunk": args.chunk,
            "steps_per_process": args.steps,
            "dtype": args.dtype,
            "mesh": "1 device (1 x 1)",
            "batches": args.batches,
            "cap_bytes": cap,
            "cap_requested_gb": args.cap_gb,
            "loss": "CAM InfoNCE, temperature 0.05, tiled (128, 1024)",
            "memory": "ru_maxrss of a fresh process per point (whole process, compile included)",
        },
        "machine": machine,
        "quiet_wait": quiet,
        "contention": m.contention_since(start),
        "baseline": base,
        "series": results,
        "slopes": {mode: fits(rows) for mode, rows in results.items()},
    }
    m.emit(report, args.out)
    return report


if __name__ == "__main__":
    main()

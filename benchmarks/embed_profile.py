"""Where one jitted embed call spends its time, by kind of XLA op, on this CPU.

Compiles `Encoder`'s program for one packed batch shape with the optimised HLO dumped
(`--xla_dump_to`), runs it under the JAX profiler, and attributes every XLA:CPU op event of the
trace to its instruction in the optimised HLO: dense and attention matmuls (with their operand
and result dtypes: `bf16,bf16->f32` is the fast bf16 path, `f32,f32->f32` in a bf16 model is an
upcast), softmax, activation, norms, layout copies, converts. Prints JSON: milliseconds and shares
per category, the share of time in matmuls, and the matmul FLOP rate against a 2048^3 matmul
timed in the same process (so background load affects both alike).

    python benchmarks/embed_profile.py --model multilingual-e5-small --dtype bfloat16
    python benchmarks/embed_profile.py --rows 32 --length 128 --out /tmp/profile.json
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import sys
import tempfile
from typing import Any

DUMP = tempfile.mkdtemp(prefix="embed_profile_hlo_")
# Before JAX starts: the dump of every compiled module's optimised HLO.
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_dump_to={DUMP}".strip()

import _machine as m  # noqa: E402
import numpy as np  # noqa: E402

log = m.logger("embed_profile")
INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (\S+) (\w+)\((.*)$", re.M)
COMPUTATION = re.compile(r"^%?([\w.\-]+) \([^\n]*\{\n(.*?)\n\}", re.S | re.M)


def categories(hlo: str) -> dict[str, str]:
    """Instruction name -> category, from the ops inside the computation it calls."""
    bodies = {name: body for name, body in COMPUTATION.findall(hlo)}
    out = {}
    for name, shape, op, rest in INSTRUCTION.findall(hlo):
        called = re.search(r"calls=%([\w.\-]+)", rest)
        body = bodies.get(called.group(1), "") if called else ""
        ops = set(re.findall(r"= \S+ (\w+)\(", body)) | {op}
        if "dot" in ops:
            dots = re.findall(r"= (\w+)\[([\d,]*)\]\S* dot\((%[\w.\-]+), (%[\w.\-]+)\)", body)
            result, dims, lhs, rhs = dots[0] if dots else (shape.split("[")[0], "", "", "")
            kind = "attention" if dims.count(",") >= 3 else "dense"
            operands = ",".join(_dtype_of(body, x) for x in (lhs, rhs))
            extra = " + fused norm" if "rsqrt" in ops else ""
            out[name] = f"matmul {kind} {operands}->{result}{extra}"
        elif "exponential" in ops and "reduce" in ops:
            out[name] = "softmax"
        elif ops & {"exponential", "erf", "tanh", "logistic"}:
            out[name] = "activation"
        elif "rsqrt" in ops or "reduce" in ops:
            out[name] = "norm / reduction"
        elif ops & {"transpose", "copy"}:
            out[name] = "layout copy (transpose)"
        elif ops & {"gather", "dynamic-slice"}:
            out[name] = "gather"
        elif ops <= {"convert", "bitcast", "parameter", "fusion"}:
            out[name] = "convert"
        else:
            out[name] = "other elementwise"
    return out


def _dtype_of(body: str, operand: str) -> str:
    """The element type of `operand` (an instruction of `body`), e.g. "bf16"."""
    found = re.search(rf"{re.escape(operand)} = (\w+)\[", body)
    return found.group(1) if found else "?"


def profile(fn, args, runs: int) -> tuple[collections.Counter, float]:
    """Summed duration (ns) per trace event name over `runs` calls, and the wall seconds."""
    import jax
    from jax._src.lib import _profile_data

    trace = tempfile.mkdtemp(prefix="embed_profile_trace_")
    with jax.profiler.trace(trace), m.Timer() as t:
        for _ in range(runs):
            jax.block_until_ready(fn(*args))
    (path,) = glob.glob(f"{trace}/**/*.xplane.pb", recursive=True)
    events: collections.Counter = collections.Counter()
    for plane in _profile_data.ProfileData.from_file(path).planes:
        for line in plane.lines:
            for event in line.events:
                events[event.name] += event.duration_ns
    return events, t.wall


def main(argv=None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="multilingual-e5-small")
    p.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
    p.add_argument("--rows", type=int, default=32)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--segment", type=int, default=25, help="tokens per packed text")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    import jax
    import jax.numpy as jnp

    from compass_jax.encoder import Encoder

    enc = Encoder.load(args.model, dtype=args.dtype)
    rows, length = args.rows, args.length
    ids = np.full((rows, length), 5, np.int32)
    segments = length // 4
    seg = np.minimum(np.arange(length) // args.segment + 1, segments).astype(np.int32)
    seg = np.broadcast_to(seg, (rows, length))
    fn = enc._embed_fn
    call = (enc.params, ids, seg, None, segments)
    jax.block_until_ready(fn(*call))  # compile: the dump is written now
    (hlo_path,) = glob.glob(f"{DUMP}/*jit_run*cpu_after_optimizations.txt")
    with open(hlo_path, encoding="utf-8") as f:
        kinds = categories(f.read())

    a = jnp.ones((2048, 2048), args.dtype)
    dot = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
    jax.block_until_ready(dot(a, a))
    peak_s = min(m.wall_times(lambda: jax.block_until_ready(dot(a, a)), 5))

    events, wall = profile(fn, call, args.runs)
    by_kind: collections.Counter = collections.Counter()
    for name, ns in events.items():
        if name in kinds:
            by_kind[kinds[name]] += ns / args.runs / 1e6
    total = sum(by_kind.values())
    cfg = enc.cfg
    per_layer = 4 * cfg.hidden_size**2 + 2 * cfg.hidden_size * cfg.intermediate_size
    dense_flop = 2 * per_layer * rows * length * cfg.num_layers
    dense_ms = sum(v for k, v in by_kind.items() if k.startswith("matmul dense"))
    report = {
        "machine": m.machine_info(with_torch=False),
        "model": args.model,
        "dtype": args.dtype,
        "shape": [rows, length],
        "hlo": hlo_path,
        "call_ms": round(wall / args.runs * 1e3, 1),
        "op_ms": round(total, 1),
        "by_category": {
            k: {"ms": round(v, 2), "share": round(v / total, 3)} for k, v in by_kind.most_common()
        },
        "dense_matmul_gflop_per_s": m.gflops(dense_flop, dense_ms / 1e3),
        "peak_2048_gflop_per_s": m.gflops(2 * 2048**3, peak_s),
        "load_average": m.load_average(),
    }
    m.emit(report, args.out)
    return report


if __name__ == "__main__":
    sys.exit(main() and 0)

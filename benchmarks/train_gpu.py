"""Training on one GPU: model FLOPs utilisation of the step, and the largest GradCache batch.

A randomly initialised Qwen3-0.6B-sized encoder (hidden 1024, 28 layers, 16 heads, 8 kv heads,
head dim 128, FFN 3072, vocab 151,669, causal, last-token pooling) computing in bfloat16 (float32
master weights and AdamW moments), one device, CAM InfoNCE with one hard negative, random token ids
with no padding (every token is real). Phases, in order; the report is printed (indented JSON) after
every phase and every search attempt, so the last JSON document on stdout is the most complete one
and a run cut short still leaves its partial results (also in `--out`):

1. `mfu_gradcache`: the GradCache step (`--mfu-chunk` rows per chunk) on `--mfu-batch` triples at
   sequence length `--mfu-seq` (512): median of `--mfu-steps` steps after one warm-up step. Model
   FLOPs = 6 x (parameters in matmuls) x tokens + attention (`q k^T` and `p v`, forward 4 l^2 n h
   per layer and sequence, halved for causal masking as MaxText counts it, x3 for the backward).
   MFU = model FLOPs / step time / the GPU's dense bf16 peak (table below, by `device_kind`); the
   hardware utilisation also counts GradCache's extra forward pass (8 N per token instead of 6 N).
   Target: MFU >= 45% on an H100.
2. `max_batch`: the largest global batch that fits with GradCache at sequence length `--search-seq`
   (128) and a fixed chunk (`--search-chunk`), doubling from `--search-start` (4096) up to
   `--search-max`. Each size is compiled ahead of time and XLA's buffer assignment (arguments +
   outputs + temporaries, known before running) is compared with the device's `bytes_limit`;
   compiling takes far less than running (one step at 65,536 x 3 x 128 tokens is ~90 PFLOP, about
   three minutes on an H100). Then one real step runs at the largest fitting size the remaining
   budget allows (an out-of-memory error is caught and recorded, and the next smaller size is
   tried). Target: >= 65,536.
3. `mfu_plain`: the plain step (no GradCache; the whole batch's activations kept) on
   `--plain-batch` triples at `--mfu-seq`, when the budget still allows.

`--budget-s` (default 420) bounds the whole run: an attempt whose estimated cost (last compile time
plus the step time projected from phase 1's throughput) does not fit is skipped and says so.
`XLA_PYTHON_CLIENT_MEM_FRACTION` defaults to 0.95 here (JAX's own default, 0.75, would cap the
search at three quarters of the card).

Without a GPU it prints `{"skipped": reason}` and exits 0. `--smoke` runs every code path (model
building, FLOP counting, the three phases) on any backend with a tiny Qwen3 config, in seconds.

    python benchmarks/train_gpu.py --out /tmp/train_gpu.json        # one H100: under ~8 minutes
    python benchmarks/train_gpu.py --smoke                          # CPU check of the code paths
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")

import _machine as m  # after the allocator setting, before JAX starts
import _training as tr

log = m.logger("train_gpu")

# Dense bf16 tensor-core peaks (no sparsity), TFLOP/s, by a substring of `device_kind`; the first
# match wins, so the specific variants come before the family name.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM (device_kind "NVIDIA H100 80GB HBM3")
    ("H200", 989.0),
    ("H800", 989.0),
    ("GH200", 989.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10", 125.0),
)


def peak_tflops(device_kind: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in device_kind.lower():
            return value
    return None


def model_config(smoke: bool):
    from compass_jax.config import ModelConfig

    if smoke:
        sizes = dict(
            vocab_size=1009,
            hidden_size=64,
            num_layers=2,
            num_heads=4,
            num_kv_heads=2,
            head_dim=16,
            intermediate_size=96,
        )
    else:  # Qwen3-0.6B
        sizes = dict(
            vocab_size=151669,
            hidden_size=1024,
            num_layers=28,
            num_heads=16,
            num_kv_heads=8,
            head_dim=128,
            intermediate_size=3072,
        )
    return ModelConfig(
        arch="qwen3",
        max_position_embeddings=40960,
        norm_eps=1e-6,
        hidden_act="silu",
        attention_bias=False,
        rope_theta=1_000_000.0,
        causal=True,
        dtype="bfloat16",
        **sizes,
    )


def batch_fn(mesh, batch: int, seq: int, vocab: int):
    """A jitted `key -> batch` making random full-length triples on the device, and its
    abstract (shape, dtype, sharding) result for ahead-of-time lowering."""
    import jax
    import jax.numpy as jnp

    from compass_jax import sharding
    from compass_jax.data.batch import TrainBatch

    s = sharding.batch_sharding(mesh)

    def make(key):
        k = jax.random.split(key, 3)
        ids = lambda kk, *shape: jax.random.randint(kk, (batch, *shape), 1, vocab, jnp.int32)
        ones = lambda *shape: jnp.ones((batch, *shape), jnp.int32)
        idx = jnp.arange(batch, dtype=jnp.int32)
        return TrainBatch(
            query_ids=ids(k[0], seq),
            query_attention_mask=ones(seq),
            positive_ids=ids(k[1], seq),
            positive_attention_mask=ones(seq),
            negative_ids=ids(k[2], 1, seq),
            negative_attention_mask=ones(1, seq),
            negative_valid=jnp.ones((batch, 1), bool),
            label=jnp.full((batch,), -1, jnp.int32),
            negative_label=jnp.full((batch, 1), -1, jnp.int32),
            query_hash=idx,
            positive_hash=idx + batch,
            negative_hash=(idx + 2 * batch)[:, None],
        )

    fn = jax.jit(make, out_shardings=s)
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        jax.eval_shape(make, jax.random.key(0)),
    )
    return fn, abstract


def is_oom(e: BaseException) -> bool:
    text = str(e)
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


class Run:
    """The model, one training state shared by every step variant, the budget and the report."""

    def __init__(self, args):
        import jax

        from compass_jax import models
        from compass_jax.losses import LossSettings

        self.args, self.t0 = args, time.perf_counter()
        self.cfg = model_config(args.smoke)
        self.device = jax.devices()[0]
        tic = time.perf_counter()
        params = jax.jit(models.init, static_argnums=0)(self.cfg, jax.random.key(0))
        self.flop_params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
        # One state for every step variant (a second copy would halve the batch search's room).
        self.harness = tr.Harness.create(
            self.cfg, params, "last", chunk=args.mfu_chunk, loss=LossSettings(), dtype="bfloat16"
        )
        self.mesh = self.harness.training.mesh
        del params
        jax.block_until_ready(self.harness.state)
        kind = self.device.device_kind
        self.report: dict[str, Any] = {
            "benchmark": "train_gpu",
            "machine": m.machine_info(with_torch=False),
            "device_kind": kind,
            "peak_bf16_tflops": peak_tflops(kind),
            "memory_limit_bytes": self.memory_limit(),
            "mem_fraction": os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION"),
            "model": {
                "config": "tiny (smoke)" if args.smoke else "Qwen3-0.6B-sized, random",
                **{
                    k: getattr(self.cfg, k)
                    for k in (
                        "hidden_size",
                        "num_layers",
                        "num_heads",
                        "num_kv_heads",
                        "head_dim",
                        "intermediate_size",
                        "vocab_size",
                        "dtype",
                        "causal",
                    )
                },
                "matmul_params": tr.matmul_params(self.flop_params),
                "all_params": sum(x.size for x in jax.tree.leaves(self.flop_params)),
            },
            "setup_s": round(time.perf_counter() - tic, 1),
            "budget_s": args.budget_s,
        }
        self.throughput: float | None = None  # hardware FLOP/s measured in phase 1
        self.last_compile_s = 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def memory_limit(self) -> int | None:
        stats = self.device.memory_stats() if hasattr(self.device, "memory_stats") else None
        if stats and "bytes_limit" in stats:
            return int(stats["bytes_limit"])
        return int((m.meminfo_gib()["mem_available_gib"] or 0) * 2**30) or None

    def emit(self) -> None:
        self.report["elapsed_s"] = round(self.elapsed(), 1)
        m.emit(self.report, self.args.out)

    def step_fn(self, chunk: int | None) -> tr.Harness:
        return self.harness.with_chunk(chunk)

    def flops(self, batch: int, seq: int, gradcache: bool) -> dict[str, float]:
        return tr.step_flops(
            self.cfg, self.flop_params, seq=seq, sequences=3 * batch, gradcache=gradcache
        )

    def compile(self, step: tr.Harness, abstract) -> dict[str, Any]:
        info = step.compile(abstract)
        self.last_compile_s = info["compile_s"]
        return info

    def run_steps(self, step: tr.Harness, batches) -> list[float]:
        return [step.run(batch)[0] for batch in batches]

    def utilisation(self, flops: dict[str, float], seconds: float) -> dict[str, Any]:
        peak = self.report["peak_bf16_tflops"]
        out = {
            "model_tflop_per_s": round(flops["model_flops"] / seconds / 1e12, 2),
            "hardware_tflop_per_s": round(flops["hardware_flops"] / seconds / 1e12, 2),
        }
        if peak:
            out["mfu"] = round(flops["model_flops"] / seconds / (peak * 1e12), 4)
            out["hfu"] = round(flops["hardware_flops"] / seconds / (peak * 1e12), 4)
        return out

    def mfu(self, name: str, batch: int, chunk: int | None, steps: int) -> None:
        import jax

        seq = self.args.mfu_seq
        log(f"{name}: batch {batch} x 3 towers x {seq} tokens, chunk {chunk} ...")
        make, abstract = batch_fn(self.mesh, batch, seq, self.cfg.vocab_size)
        entry: dict[str, Any] = {"batch": batch, "seq": seq, "chunk": chunk, "steps": steps}
        self.report[name] = entry
        try:
            step = self.step_fn(chunk)
            entry.update(self.compile(step, abstract))
            batches = [make(jax.random.key(i)) for i in range(steps + 1)]
            times = self.run_steps(step, batches)
        except Exception as e:
            entry["error"] = f"{type(e).__name__}: {str(e)[:1500]}"
            entry["oom"] = is_oom(e)
            self.emit()
            return
        med = statistics.median(times[1:])
        flops = self.flops(batch, seq, chunk is not None)
        entry.update(
            first_step_s=round(times[0], 3),
            **m.summarize(times[1:]),
            flops_per_step=flops,
            **self.utilisation(flops, med),
            device_peak_bytes=self.peak_bytes(),
        )
        if chunk is not None:
            self.throughput = flops["hardware_flops"] / med
        log(f"  median {med:.3f} s, {entry.get('mfu')} MFU")
        self.emit()

    def peak_bytes(self) -> int | None:
        stats = self.device.memory_stats() if hasattr(self.device, "memory_stats") else None
        return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None

    def search(self) -> None:
        """Size every doubling by compiling it (cheap next to running it), then run one real
        step at the largest size the budget allows, stepping down on an out-of-memory error."""
        import jax

        a, seq = self.args, self.args.search_seq
        limit = self.memory_limit()
        step = self.step_fn(a.search_chunk)
        result: dict[str, Any] = {
            "seq": seq,
            "chunk": a.search_chunk,
            "memory_limit_bytes": limit,
            "attempts": [],
            "largest_fitting_by_analysis": None,
            "largest_run": None,
            "target": 65536,
        }
        self.report["max_batch"] = result
        fitting = []  # (attempt, make), smallest first
        batch = a.search_start
        while batch <= a.search_max:
            attempt: dict[str, Any] = {"batch": batch}
            result["attempts"].append(attempt)
            if self.elapsed() + self.last_compile_s * 1.2 > a.budget_s:
                attempt["status"] = "not tried: time budget"
                break
            log(f"max_batch: compiling batch {batch} ...")
            make, abstract = batch_fn(self.mesh, batch, seq, self.cfg.vocab_size)
            try:
                info = self.compile(step, abstract)
            except Exception as e:
                attempt.update(
                    status="oom at compile" if is_oom(e) else "error at compile",
                    error=f"{type(e).__name__}: {str(e)[:1000]}",
                )
                self.emit()
                break
            attempt.update(info)
            need = info.get("xla_total_bytes")
            if limit and need and need > limit:
                attempt["status"] = "does not fit (XLA buffer assignment exceeds the limit)"
                self.emit()
                break
            attempt["status"] = "fits (XLA buffer assignment)"
            result["largest_fitting_by_analysis"] = batch
            fitting.append((attempt, make))
            self.emit()
            batch *= 2
        for attempt, make in reversed(fitting):
            batch = attempt["batch"]
            flops = self.flops(batch, seq, True)
            estimate = flops["hardware_flops"] / self.throughput if self.throughput else None
            attempt["estimated_step_s"] = round(estimate, 1) if estimate else None
            if estimate is not None and self.elapsed() + estimate * 1.3 > a.budget_s:
                attempt["run"] = "not run: time budget"
                continue
            log(f"max_batch: running batch {batch} ...")
            try:
                (seconds,) = self.run_steps(step, [make(jax.random.key(batch))])
            except Exception as e:
                attempt.update(
                    run="oom" if is_oom(e) else "error",
                    error=f"{type(e).__name__}: {str(e)[:1000]}",
                )
                self.emit()
                if not is_oom(e):
                    break
                continue
            attempt.update(
                run="ok",
                step_s=round(seconds, 2),
                examples_per_s=round(batch / seconds, 1),
                device_peak_bytes=self.peak_bytes(),
                **self.utilisation(flops, seconds),
            )
            result["largest_run"] = batch
            break
        ran_oom = any(att.get("run") == "oom" for att, _ in fitting)
        best = result["largest_run"] if ran_oom else result["largest_fitting_by_analysis"]
        result["largest_fitting"] = best
        result["meets_target"] = (best or 0) >= 65536
        self.emit()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny model, any backend")
    p.add_argument("--mfu-seq", type=int, default=512)
    p.add_argument("--mfu-batch", type=int, default=64)
    p.add_argument("--mfu-chunk", type=int, default=16)
    p.add_argument("--mfu-steps", type=int, default=5)
    p.add_argument("--plain-batch", type=int, default=8)
    p.add_argument("--search-seq", type=int, default=128)
    p.add_argument("--search-chunk", type=int, default=128)
    p.add_argument("--search-start", type=int, default=4096)
    p.add_argument("--search-max", type=int, default=131072)
    p.add_argument("--budget-s", type=float, default=420)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.smoke:  # every phase, in seconds on a CPU
        args.mfu_seq, args.mfu_batch, args.mfu_chunk, args.mfu_steps = 32, 8, 4, 2
        args.plain_batch, args.search_seq, args.search_chunk = 4, 16, 8
        args.search_start, args.search_max = 16, 64
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import jax

    backend = jax.default_backend()
    if backend != "gpu" and not args.smoke:
        report = {"benchmark": "train_gpu", "skipped": f"no GPU (JAX backend: {backend})"}
        m.emit(report, args.out)
        return report
    run = Run(args)
    run.emit()
    try:
        run.mfu("mfu_gradcache", args.mfu_batch, args.mfu_chunk, args.mfu_steps)
        run.search()
        if run.elapsed() + 2 * run.last_compile_s < args.budget_s:
            run.mfu("mfu_plain", args.plain_batch, None, args.mfu_steps)
        else:
            run.report["mfu_plain"] = {"skipped": "time budget"}
    except Exception:  # keep what was measured
        run.report["error"] = traceback.format_exc()[-3000:]
        print(run.report["error"], file=sys.stderr)
    run.emit()
    return run.report


if __name__ == "__main__":
    main()

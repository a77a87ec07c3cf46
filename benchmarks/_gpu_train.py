"""What `gpu_suite.py`'s training phases (`_gpu_mfu`, `_gpu_max_batch`) share: the model sizes,
the levers and the order variants run in, the model and its training state, FLOP utilisation,
and the timing of a compiled variant.

The model is a randomly initialised Qwen3 of a named size (causal, last-token pooling, bf16
compute over float32 master weights and AdamW moments), CAM InfoNCE with one hard negative,
random token ids with no padding (every token real). The step is `compass_jax.train`'s, built by
`_training.Harness` (the program `compass-jax train` runs); a lever is a `StepSpec` change.

Model FLOPs = 6 x (parameters in matmuls) x tokens + attention (`_training.step_flops`); MFU
divides them by the step time and the card's dense bf16 peak (datasheet, as MaxText counts), HFU
also counts GradCache's second forward pass (8 N per token instead of 6 N). Not a benchmark
itself; `gpu_suite.py` imports it.
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import _gpu_timing as timing
import _machine as m
import _training as tr

log = m.logger("gpu_suite")

SIZES = {  # Qwen3 dense sizes (hidden, layers, heads, kv heads, head dim, FFN, vocab)
    "0.6b": (1024, 28, 16, 8, 128, 3072, 151669),
    "4b": (2560, 36, 32, 8, 128, 9728, 151669),
    "smoke": (64, 1, 4, 2, 16, 96, 1009),
}
# Dense bf16 tensor-core peaks (no sparsity), TFLOP/s, by a substring of `device_kind`; the first
# match wins, so the specific variants come before the family name.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM ("NVIDIA H100 80GB HBM3")
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H800", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
)


def peak_tflops(device_kind: str) -> float | None:
    return next((v for k, v in PEAK_BF16_TFLOPS if k.lower() in device_kind.lower()), None)


def qwen3(size: str):
    from compass_jax.config import ModelConfig

    d, layers, heads, kv, h, f, vocab = SIZES[size]
    return ModelConfig(
        arch="qwen3", vocab_size=vocab, hidden_size=d, num_layers=layers, num_heads=heads,
        num_kv_heads=kv, head_dim=h, intermediate_size=f, max_position_embeddings=40960,
        norm_eps=1e-6, hidden_act="silu", attention_bias=False, rope_theta=1e6, causal=True,
        dtype="bfloat16",
    )  # fmt: skip


def _options(spec, **options) -> dict[str, Any]:
    return {"compiler_options": tuple(sorted({**dict(spec.compiler_options), **options}.items()))}


# A lever: `spec -> StepSpec changes`. `TUNED` is the bundle expected to help most (tried right
# after the default, then without each of its levers, last first); `EXTRAS` are tried on top.
LEVERS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "cudnn_attention": lambda s: {"model": s.model.replace(attention_impl="cudnn")},
    "cast_params_once": lambda s: {"cast_params": True},
    "chunk_x2": lambda s: {"gradcache_chunk": 2 * s.gradcache_chunk},
    "latency_hiding_scheduler": lambda s: _options(s, xla_gpu_enable_latency_hiding_scheduler=True),
    "no_triton_gemm": lambda s: _options(s, xla_gpu_enable_triton_gemm=False),
    # CUDA graphs around the GradCache scans too: one launch per loop instead of per kernel.
    "command_buffers": lambda s: _options(
        s, xla_gpu_enable_command_buffer="FUSION,CUBLAS,CUDNN,WHILE"
    ),
    "remat_dots": lambda s: {"remat": "dots_with_no_batch_dims_saveable"},
}
GPU_ONLY = frozenset({"cudnn_attention"})
TUNED = ("cudnn_attention", "cast_params_once", "chunk_x2")
EXTRAS = ("command_buffers", "latency_hiding_scheduler", "no_triton_gemm", "remat_dots")


def plan(tuned: Sequence[str], extras: Sequence[str], *, tuned_first=False, smoke=False):
    """The variants in the order they run: the default and the tuned bundle (in the order asked
    for), the bundle without each of its levers (the last first), the bundle plus each extra;
    a variant is a tuple of lever names. A smoke run takes every lever at once, alone: each
    lever's code runs, and compiles are what a CPU smoke run cannot afford."""
    tuned = tuple(tuned)
    if smoke:
        return [(*tuned, *(x for x in extras if x not in tuned))]
    variants = [tuned, ()] if tuned_first else [(), tuned]
    if len(tuned) > 1:
        variants += [tuple(x for x in tuned if x != drop) for drop in reversed(tuned)]
    variants += [(*tuned, extra) for extra in extras if extra not in tuned]
    return list(dict.fromkeys(variants))


# A smoke run compiles for speed of compiling: the CPU code it makes is never timed.
SMOKE_OPTIONS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def available(levers: Sequence[str], gpu: bool) -> list[str]:
    return [x for x in levers if gpu or x not in GPU_ONLY]


def with_levers(harness: tr.Harness, levers: Sequence[str]) -> tr.Harness:
    spec = harness.spec
    for name in levers:
        spec = dataclasses.replace(spec, **LEVERS[name](spec))
    return dataclasses.replace(harness, spec=spec)


def name_of(levers: Sequence[str]) -> str:
    return "+".join(levers) or "default"


def batch_fn(mesh, batch: int, seq: int, vocab: int):
    """A jitted `key -> TrainBatch` of random full-length triples made on the device, and its
    abstract (shape, dtype, sharding) value for compiling ahead of time."""
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
            query_ids=ids(k[0], seq), query_attention_mask=ones(seq),
            positive_ids=ids(k[1], seq), positive_attention_mask=ones(seq),
            negative_ids=ids(k[2], 1, seq), negative_attention_mask=ones(1, seq),
            negative_valid=jnp.ones((batch, 1), bool), label=jnp.full((batch,), -1, jnp.int32),
            negative_label=jnp.full((batch, 1), -1, jnp.int32), query_hash=idx,
            positive_hash=idx + batch, negative_hash=(idx + 2 * batch)[:, None],
        )  # fmt: skip

    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        jax.eval_shape(make, jax.random.key(0)),
    )
    return jax.jit(make, out_shardings=s), abstract


def is_oom(e: BaseException) -> bool:
    return "RESOURCE_EXHAUSTED" in str(e) or "out of memory" in str(e).lower()


def error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e)[:1200]}"


@dataclasses.dataclass
class Clock:
    """The phase's time budget, counted from the worker's start."""

    budget_s: float
    start: float = dataclasses.field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget_s - self.elapsed()


@dataclasses.dataclass
class Model:
    """A random model of one size on the first device and the training state stepping it."""

    size: str
    cfg: Any
    harness: tr.Harness
    flop_params: Any
    setup_s: float

    @classmethod
    def build(cls, size: str, *, chunk: int, loss_block: tuple[int, int]) -> Model:
        """Random params of `size` (on the device), the training state and its default step
        (`SMOKE_OPTIONS` compile options for the tiny smoke size)."""
        import jax

        from compass_jax import models
        from compass_jax.losses import LossSettings

        tic = time.perf_counter()
        log(f"building a random {size} model and its training state")
        cfg = qwen3(size)
        params = jax.jit(models.init, static_argnums=0)(cfg, jax.random.key(0))
        flop_params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
        harness = tr.Harness.create(
            cfg, params, "last", chunk=chunk, loss=LossSettings(), dtype="bfloat16",
            loss_block=loss_block,
        )  # fmt: skip
        del params
        jax.block_until_ready(harness.state)
        if size == "smoke":
            harness = harness.with_spec(compiler_options=tuple(sorted(SMOKE_OPTIONS.items())))
        return cls(size, cfg, harness, flop_params, round(time.perf_counter() - tic, 1))

    @property
    def device(self):
        return self.harness.training.mesh.devices.flat[0]

    def memory_stat(self, key: str) -> int | None:
        stats = self.device.memory_stats() if hasattr(self.device, "memory_stats") else None
        return int(stats[key]) if stats and key in stats else None

    def memory_limit(self) -> int | None:
        """What XLA may allocate on the device; off a GPU, the host's available memory."""
        limit = self.memory_stat("bytes_limit")
        return limit or int((m.meminfo_gib()["mem_available_gib"] or 0) * 2**30) or None

    def describe(self) -> dict[str, Any]:
        import jax

        names = ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim")
        names += ("intermediate_size", "vocab_size", "dtype", "causal")
        return {
            "size": f"Qwen3-{self.size.upper()}-sized, random" if self.size != "smoke" else "tiny",
            **{k: getattr(self.cfg, k) for k in names},
            "matmul_params": tr.matmul_params(self.flop_params),
            "all_params": sum(x.size for x in jax.tree.leaves(self.flop_params)),
            "setup_s": self.setup_s,
            "memory_limit_bytes": self.memory_limit(),
        }

    def flops(self, batch: int, seq: int) -> dict[str, float]:
        return tr.step_flops(
            self.cfg, self.flop_params, seq=seq, sequences=3 * batch, gradcache=True
        )


def utilisation(flops: dict[str, float], seconds: float, context: dict) -> dict[str, Any]:
    peak, measured = context.get("peak_bf16_tflops"), context.get("matmul_tflops")
    out = {
        "model_tflop_per_s": round(flops["model_flops"] / seconds / 1e12, 3),
        "hardware_tflop_per_s": round(flops["hardware_flops"] / seconds / 1e12, 3),
    }
    if peak:
        out["mfu"] = round(flops["model_flops"] / seconds / (peak * 1e12), 4)
        out["hfu"] = round(flops["hardware_flops"] / seconds / (peak * 1e12), 4)
    if measured:  # against the matmul rate measured in the same run (the practical ceiling)
        out["hfu_of_measured_matmul"] = round(
            flops["hardware_flops"] / seconds / 1e12 / measured, 4
        )
    return out


def measure(h: tr.Harness, batches, *, steps: int, diagnose: bool, context, trace_dir=None):
    """Steps of a compiled variant: the first (blocking), `steps` polled (the step time), and
    for `diagnose` the other clocks and one profiled step (see `_gpu_timing`)."""
    import jax

    rotation = itertools.cycle(batches)
    step = lambda: h.dispatch(next(rotation))
    _, first = timing.timed(step, "blocking")
    polled = [timing.timed(step, "polled") for _ in range(steps)]
    times = [t["total_s"] for _, t in polled]
    out: dict[str, Any] = {
        "first_step_s": round(first["total_s"], 4),
        "step_s": round(statistics.median(times), 5),
        "polled_s": [round(t, 5) for t in times],
        "dispatch_s": [round(t["dispatch_s"], 5) for _, t in polled],
        "loss": float(jax.device_get(polled[-1][0]["loss"])),
    }
    if diagnose:
        blocking = [timing.timed(step, "blocking")[1]["total_s"] for _ in range(2)]
        out["blocking_s"] = [round(t, 5) for t in blocking]
        fetched = [timing.timed(step, "fetched")[1]["total_s"]]
        out["fetched_s"] = [round(t, 5) for t in fetched]
        out["pipelined_step_s"] = round(timing.pipelined(step, 2), 5)
        device = None
        try:
            with tempfile.TemporaryDirectory() as tmp:
                stats, path = timing.profile(step, tmp)
                if trace_dir is not None:
                    trace_dir(path)
            out["profile"], device = stats, stats["device_span_s"]
        except Exception as e:  # no CUPTI in a sandbox, say; the other clocks still stand
            out["profile"] = {"error": error_text(e)}
        out["clocks"] = timing.diagnose(
            blocking=blocking, polled=times, pipelined_s=out["pipelined_step_s"],
            device_s=device, noop=context.get("noop_sync_s"), fetched=fetched,
            dispatch=[t["dispatch_s"] for _, t in polled],
        )  # fmt: skip
    return out

"""The machine: a description for figures measured on it (CPU model and SIMD features, cores,
memory, library versions, JAX devices and load; benchmarks and the demo put it beside their
numbers, since a figure without its machine cannot be compared), and the compute dtype it runs
fastest (`default_compute_dtype`)."""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import os
import platform
from typing import Any

SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
# x86 instructions that multiply bf16 pairs into float32 sums. With them XLA's bf16 x bf16 -> f32
# matmuls run about twice as fast as float32 ones (AVX512-BF16 on an EPYC: 945 vs 480 GFLOP/s,
# benchmarks/embed_throughput.py; AMX more); without them bf16 is emulated and slower than
# float32 (96 vs 143 GFLOP/s on an EPYC with AVX2 only).
BF16_MATMUL_FLAGS = ("amx_bf16", "avx512_bf16")
DTYPE_ENV = "COMPASS_JAX_DTYPE"


def cpu_description() -> dict[str, Any]:
    model, flags = platform.processor(), set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    return {"cpu_model": model, "simd_flags": [f for f in SIMD_FLAGS if f in flags]}


def compute_dtype_decision() -> dict[str, str]:
    """`{"dtype", "reason"}`: the compute dtype this machine runs fastest, and why.

    In order: `$COMPASS_JAX_DTYPE` when set; bfloat16 on GPU and TPU (their matrix units take
    bf16); on CPUs bfloat16 when the CPU has bf16 dot-product instructions (`BF16_MATMUL_FLAGS`),
    else float32. Parameters stay float32 either way; matmuls accumulate in float32.
    """
    if choice := os.environ.get(DTYPE_ENV):
        if choice not in ("float32", "bfloat16"):
            raise ValueError(f"${DTYPE_ENV}: expected float32 or bfloat16, got {choice!r}")
        return {"dtype": choice, "reason": f"${DTYPE_ENV}"}
    return _hardware_dtype()


@functools.cache
def _hardware_dtype() -> dict[str, str]:
    import jax

    backend = jax.default_backend()
    if backend != "cpu":
        return {"dtype": "bfloat16", "reason": f"{backend}: bf16 matrix units"}
    flags = [f for f in cpu_description()["simd_flags"] if f in BF16_MATMUL_FLAGS]
    if flags:
        return {"dtype": "bfloat16", "reason": f"CPU has {', '.join(flags)}"}
    return {"dtype": "float32", "reason": f"CPU has none of {', '.join(BF16_MATMUL_FLAGS)}"}


def default_compute_dtype() -> str:
    """ "bfloat16" or "float32": what `compute_dtype_decision` picks for this machine."""
    return compute_dtype_decision()["dtype"]


def meminfo_gib() -> dict[str, float | None]:
    out = {}
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="utf-8") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                out[key] = round(int(value.split()[0]) / 2**20, 1)
    return {"mem_total_gib": out.get("MemTotal"), "mem_available_gib": out.get("MemAvailable")}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine_info(*, with_torch: bool = True) -> dict[str, Any]:
    """CPU, cores, memory, library versions, JAX backend and devices, the default compute dtype
    and why, load average."""
    import jax
    import optax

    info: dict[str, Any] = {
        **cpu_description(),
        "cpu_count": os.cpu_count(),
        "schedulable_cpus": len(os.sched_getaffinity(0)),
        **meminfo_gib(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "flax": importlib.metadata.version("flax"),  # only compass_jax.models imports flax
        "optax": optax.__version__,
        "jax_backend": jax.default_backend(),
        "jax_devices": [f"{d.platform}:{d.device_kind}" for d in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "load_average_at_start": load_average(),
    }
    info["compute_dtype"] = compute_dtype_decision()
    if with_torch:
        try:
            import torch

            info["torch"] = torch.__version__
            info["torch_threads"] = torch.get_num_threads()
            info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        except ImportError:
            info["torch"] = None
        try:
            import transformers

            info["transformers"] = transformers.__version__
        except ImportError:
            info["transformers"] = None
    return info


def one_line(info: dict[str, Any]) -> str:
    """`AMD EPYC ... (avx2, fma), 2 CPUs, 15.6 GiB, jax 0.10.2 on 8 cpu devices`."""
    devices = info.get("jax_devices") or []
    kinds = sorted({d.split(":")[0] for d in devices})
    return (
        f"{info['cpu_model']} ({', '.join(info['simd_flags']) or 'no AVX2'}), "
        f"{info['schedulable_cpus']} CPUs, {info['mem_total_gib']} GiB, "
        f"jax {info['jax']} on {len(devices)} {'/'.join(kinds)} device(s)"
    )

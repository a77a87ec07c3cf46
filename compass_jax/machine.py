"""A description of the machine a figure was measured on: CPU model and SIMD features, cores,
memory, library versions, JAX devices and load. Benchmarks and the demo put it beside their
numbers, since a figure without its machine cannot be compared."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
from typing import Any

SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


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
    """CPU, cores, memory, library versions, JAX backend and devices, load average."""
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
    if with_torch:
        try:
            import torch

            info["torch"] = torch.__version__
            info["torch_threads"] = torch.get_num_threads()
        except ImportError:
            info["torch"] = None
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

"""Test set-up: 8 fake CPU devices and no network, fixed before JAX starts."""

import os
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Float32 compute wherever a test does not choose: the oracles are float32, and the default
# (machine.default_compute_dtype) depends on the CPU.
os.environ.setdefault("COMPASS_JAX_DTYPE", "float32")
# One persistent compilation cache for the session and the subprocesses it starts (training
# runs compile the same programs several times).
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "compass-jax-test-xla-cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import jax

jax.config.update("jax_num_cpu_devices", 8)

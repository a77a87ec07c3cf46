"""Several `jax.distributed` processes on this machine's CPU, for multi-host tests."""

import os
import subprocess
import sys


def run_processes(script: str, args: list[str], *, devices: int, count: int = 2) -> list[str]:
    """Run `script` (a file) as `count` processes of one `jax.distributed` cluster on CPU (gloo
    collectives), each with `devices` simulated devices and argv `port, process id, *args`;
    their outputs. Fails (with every output) unless all exit 0."""
    port = str(20000 + (os.getpid() + hash(script)) % 20000)
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "JAX_PLATFORMS": "cpu", "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo"}  # fmt: skip
    procs = [
        subprocess.Popen(
            [sys.executable, script, port, str(i), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(count)
    ]
    logs = [p.communicate(timeout=600)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * count, logs
    return logs

"""The default compute dtype: the environment override, and the rule on CPU flags."""

import pytest

from compass_jax import machine


@pytest.fixture
def hardware(monkeypatch):
    """Pretend to run on a CPU with the given flags, with no override."""
    monkeypatch.delenv(machine.DTYPE_ENV, raising=False)

    def set_flags(flags):
        machine._hardware_dtype.cache_clear()
        monkeypatch.setattr(machine, "cpu_description", lambda: {"simd_flags": flags})

    yield set_flags
    machine._hardware_dtype.cache_clear()


@pytest.mark.parametrize(
    "flags,dtype",
    [
        (["avx2", "fma"], "float32"),  # bf16 emulated: slower than float32
        (["avx2", "avx512f", "avx512_bf16"], "bfloat16"),
        (["avx2", "amx_tile", "amx_bf16"], "bfloat16"),
    ],
)
def test_cpu_flags_decide(hardware, flags, dtype):
    hardware(flags)
    decision = machine.compute_dtype_decision()
    assert decision["dtype"] == machine.default_compute_dtype() == dtype
    assert ("none of" in decision["reason"]) == (dtype == "float32")


def test_environment_overrides_and_is_checked(hardware, monkeypatch):
    hardware(["avx512_bf16"])
    monkeypatch.setenv(machine.DTYPE_ENV, "float32")
    assert machine.default_compute_dtype() == "float32"
    monkeypatch.setenv(machine.DTYPE_ENV, "fp16")
    with pytest.raises(ValueError, match="COMPASS_JAX_DTYPE"):
        machine.default_compute_dtype()


def test_machine_info_reports_the_decision():
    info = machine.machine_info(with_torch=False)
    assert info["compute_dtype"] == {"dtype": "float32", "reason": "$COMPASS_JAX_DTYPE"}

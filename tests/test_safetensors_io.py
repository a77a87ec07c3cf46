"""Our safetensors reader/writers against the reference `safetensors` library, including the
dtypes its numpy API cannot handle (bfloat16, float8)."""

import ml_dtypes
import numpy as np
import pytest
import torch
from safetensors.torch import load_file as torch_load

from compass_jax.interop.safetensors_io import (
    SafetensorsError,
    SafetensorsFile,
    SafetensorsWriter,
    save_file,
)

TENSORS = {
    "f32": np.arange(12, dtype=np.float32).reshape(3, 4),
    "bf16": np.linspace(-2, 2, 10).astype(ml_dtypes.bfloat16).reshape(2, 5),
    "f8": np.array([[1.5, -2.0, 448.0]], dtype=ml_dtypes.float8_e4m3fn),
    "i32": np.array([7, -1], dtype=np.int32),
}


@pytest.mark.parametrize("streaming", [False, True])
def test_writers_round_trip_and_match_the_reference_reader(tmp_path, streaming):
    path = tmp_path / "x.safetensors"
    if streaming:
        specs = [(k, v.dtype, v.shape) for k, v in TENSORS.items()]
        with SafetensorsWriter(path, specs) as writer:
            for name, value in TENSORS.items():
                writer.write(name, value)
    else:
        save_file(TENSORS, path)
    ours = SafetensorsFile(path)
    reference = torch_load(str(path))
    for name, value in TENSORS.items():
        np.testing.assert_array_equal(ours.read(name).astype(np.float32), value.astype(np.float32))
        as_float = reference[name].to(torch.float32).numpy()
        np.testing.assert_array_equal(as_float, value.astype(np.float32))


def test_writer_takes_tensors_at_their_place_from_threads_and_copies_in_the_kernel(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    source = tmp_path / "source.safetensors"
    save_file(TENSORS, source)
    big = np.arange(1000, dtype=np.float32).reshape(10, 100)
    specs = [("big", big.dtype, big.shape)] + [(k, v.dtype, v.shape) for k, v in TENSORS.items()]
    path = tmp_path / "x.safetensors"
    with SafetensorsWriter(path, specs) as writer, ThreadPoolExecutor(3) as pool:
        flat = big.reshape(-1)
        parts = [pool.submit(writer.write_at, "big", lo, flat[lo : lo + 70])
                 for lo in range(0, 1000, 70)][::-1]  # fmt: skip
        copies = [pool.submit(writer.copy_at, k, SafetensorsFile(source)) for k in TENSORS]
        for future in parts + copies:
            future.result()
    reference = torch_load(str(path))
    np.testing.assert_array_equal(reference["big"].numpy(), big)
    for name, value in TENSORS.items():
        assert SafetensorsFile(path).read(name).tobytes() == value.tobytes()

    # a tensor left incomplete: an error naming it, and no file
    incomplete = tmp_path / "y.safetensors"
    short = pytest.raises(SafetensorsError, match=r"never written: \['big'\]")
    with short, SafetensorsWriter(incomplete, specs[:1]) as writer:
        writer.write_at("big", 0, big.reshape(-1)[:999])
    assert not incomplete.exists()
    with pytest.raises(SafetensorsError, match="do not fit"), SafetensorsWriter(path, specs) as w:
        w.write_at("big", 990, big.reshape(-1)[:20])

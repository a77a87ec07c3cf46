"""A small safetensors reader/writer over numpy + ml_dtypes.

We read and write the format ourselves (8-byte header length, JSON header, raw little-endian
data) because the `safetensors` numpy API cannot represent bfloat16 or float8, which are exactly
the dtypes large checkpoints and FP8 exports use. Reads are memory-mapped, one tensor at a time,
so streaming tools (merge, export) hold about one tensor per file in memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import ml_dtypes
import numpy as np

from compass_jax import jsonio
from compass_jax.atomic import atomic_path

DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    """A malformed safetensors file; the message names the file and the tensor."""


class SafetensorsFile:
    """Lazy, read-only view of one `.safetensors` file."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        try:
            with open(self.path, "rb") as f:
                raw = f.read(8)
                if len(raw) != 8:
                    raise SafetensorsError(f"{self.path}: truncated (no header length)")
                (size,) = struct.unpack("<Q", raw)
                if size > _MAX_HEADER:
                    raise SafetensorsError(f"{self.path}: header length {size} is implausible")
                header = json.loads(f.read(size))
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.path}: no such safetensors file") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SafetensorsError(f"{self.path}: header is not valid JSON ({e})") from None
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        self._data_start = 8 + size
        self._entries: dict[str, dict[str, Any]] = header
        file_size = os.path.getsize(self.path)
        for name, entry in header.items():
            if entry.get("dtype") not in DTYPES:
                raise SafetensorsError(f"{self.path}: tensor {name!r}: dtype {entry.get('dtype')}")
            begin, end = entry["data_offsets"]
            expected = (
                int(np.prod(entry["shape"], dtype=np.int64)) * DTYPES[entry["dtype"]].itemsize
            )
            if end - begin != expected or self._data_start + end > file_size:
                raise SafetensorsError(
                    f"{self.path}: tensor {name!r}: data offsets {begin}..{end} do not fit shape "
                    f"{entry['shape']} / dtype {entry['dtype']} in a {file_size}-byte file"
                )

    def names(self) -> list[str]:
        return list(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._entries[name]["shape"])

    def dtype(self, name: str) -> np.dtype:
        return DTYPES[self._entries[name]["dtype"]]

    def nbytes(self, name: str) -> int:
        begin, end = self._entries[name]["data_offsets"]
        return end - begin

    def data_offset(self, name: str) -> int:
        """Where the tensor's bytes start (reading in this order is sequential on disk)."""
        return self._data_start + self._entries[name]["data_offsets"][0]

    def read(self, name: str) -> np.ndarray:
        """The tensor as a read-only memory-mapped array (copy it to keep it past the file)."""
        entry = self._entries[name]
        begin, _ = entry["data_offsets"]
        shape = tuple(entry["shape"])
        if not shape or 0 in shape:
            return np.zeros(shape, DTYPES[entry["dtype"]])
        return np.memmap(
            self.path,
            dtype=DTYPES[entry["dtype"]].newbyteorder("<"),
            mode="r",
            offset=self._data_start + begin,
            shape=shape,
        )


def checkpoint_files(model_dir: str | os.PathLike) -> list[str]:
    """The safetensors files of a HF directory: `model.safetensors`, or the shards that
    `model.safetensors.index.json` names (each once, in index order)."""
    model_dir = os.fspath(model_dir)
    single = os.path.join(model_dir, "model.safetensors")
    index = single + ".index.json"
    if os.path.isfile(index):
        weight_map = jsonio.read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise SafetensorsError(f"{index}: not a safetensors index (no 'weight_map' object)")
        shards = list(dict.fromkeys(weight_map.values()))
        missing = [s for s in shards if not os.path.isfile(os.path.join(model_dir, s))]
        if missing:
            raise FileNotFoundError(f"{index}: shard files missing: {missing}")
        return [os.path.join(model_dir, s) for s in shards]
    if os.path.isfile(single):
        return [single]
    raise FileNotFoundError(
        f"{model_dir}: neither model.safetensors nor model.safetensors.index.json found "
        "(only safetensors weights are read; .bin pickles are refused)"
    )


def iter_tensors(model_dir: str | os.PathLike) -> Iterator[tuple[str, SafetensorsFile]]:
    """(key, file holding it) for every tensor of a HF directory, erroring on duplicates."""
    seen: dict[str, str] = {}
    for path in checkpoint_files(model_dir):
        st = SafetensorsFile(path)
        for key in st.names():
            if key in seen:
                raise SafetensorsError(f"{path}: tensor {key!r} also appears in {seen[key]}")
            seen[key] = path
            yield key, st


def save_file(
    tensors: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write `tensors` (any dtype in `DTYPES`) to `path` atomically, one tensor at a time."""
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name, array in tensors.items():
        dtype = np.dtype(array.dtype)
        if dtype not in _NAMES:
            raise SafetensorsError(f"{path}: tensor {name!r}: dtype {dtype} cannot be saved")
        header[name] = {
            "dtype": _NAMES[dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # data aligned to 8 bytes, as the reference writer does
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for array in tensors.values():
            f.write(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes())


class SafetensorsWriter:
    """Write a safetensors file one tensor at a time, so a streaming tool never holds more than
    the tensor it is writing.

    The header goes first and carries every offset, so the names, dtypes and shapes are declared
    up front (`specs`, in file order); `write` then takes the tensors in that order and checks
    each against its declaration. Use it as a context manager: the file appears at `path` only
    when the block ends with every tensor written.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        specs: Sequence[tuple[str, Any, Sequence[int]]],
        metadata: Mapping[str, str] | None = None,
    ):
        self.path = os.fspath(path)
        self._specs = [(name, np.dtype(dtype), tuple(shape)) for name, dtype, shape in specs]
        self._next = 0
        self._pending = 0
        self._stack = contextlib.ExitStack()
        self._file: Any = None
        self._metadata = dict(metadata) if metadata else None

    def _header(self) -> bytes:
        header: dict[str, Any] = {"__metadata__": self._metadata} if self._metadata else {}
        offset = 0
        for name, dtype, shape in self._specs:
            if dtype not in _NAMES:
                raise SafetensorsError(
                    f"{self.path}: tensor {name!r}: dtype {dtype} cannot be saved"
                )
            if name in header:
                raise SafetensorsError(f"{self.path}: tensor {name!r} declared twice")
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            header[name] = {
                "dtype": _NAMES[dtype],
                "shape": list(shape),
                "data_offsets": [offset, offset + nbytes],
            }
            offset += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        return raw + b" " * (-len(raw) % 8)  # data aligned to 8 bytes, as the reference writer

    def __enter__(self) -> SafetensorsWriter:
        raw = self._header()
        with self._stack:
            tmp = self._stack.enter_context(atomic_path(self.path))
            self._file = self._stack.enter_context(open(tmp, "wb"))
            self._file.write(struct.pack("<Q", len(raw)))
            self._file.write(raw)
            self._stack = self._stack.pop_all()
        return self

    def write(self, name: str, array: np.ndarray) -> None:
        """The next declared tensor; its name, dtype and shape must match the declaration."""
        array = np.asarray(array)
        want = self._specs[self._next] if self._next < len(self._specs) else None
        if want is not None and tuple(array.shape) != want[2]:
            raise SafetensorsError(
                f"{self.path}: tensor {name!r}: shape {list(array.shape)}, declared {list(want[2])}"
            )
        self.begin(name)
        self.append(array)
        self.end()

    def begin(self, name: str) -> None:
        """Start the next declared tensor, to be given in flat pieces by `append`."""
        if self._next >= len(self._specs):
            raise SafetensorsError(f"{self.path}: tensor {name!r} was not declared")
        if self._specs[self._next][0] != name:
            raise SafetensorsError(
                f"{self.path}: expected tensor {self._specs[self._next][0]!r} next, got {name!r}"
            )
        self._pending = int(np.prod(self._specs[self._next][2], dtype=np.int64))

    def append(self, part: np.ndarray) -> None:
        """The next elements (in C order) of the tensor begun last."""
        name, dtype, _ = self._specs[self._next]
        part = np.asarray(part)
        if part.dtype != dtype or part.size > self._pending:
            raise SafetensorsError(
                f"{self.path}: tensor {name!r}: got {part.size} {part.dtype} elements, "
                f"{self._pending} {dtype} still expected"
            )
        # Written through the buffer protocol: no bytes copy of the tensor.
        self._file.write(
            np.ascontiguousarray(part, dtype=dtype.newbyteorder("<")).view(np.uint8).data
        )
        self._pending -= part.size

    def end(self) -> None:
        """Finish the tensor begun last; all its elements must have been given."""
        if self._pending:
            name = self._specs[self._next][0]
            raise SafetensorsError(f"{self.path}: tensor {name!r}: {self._pending} elements short")
        self._next += 1

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None and self._next != len(self._specs):
            missing = [name for name, _, _ in self._specs[self._next :]]
            error = SafetensorsError(
                f"{self.path}: {len(missing)} declared tensors never written: {missing[:5]}"
            )
            self._stack.__exit__(SafetensorsError, error, None)  # drops the partial file
            raise error
        return bool(self._stack.__exit__(exc_type, exc, tb))

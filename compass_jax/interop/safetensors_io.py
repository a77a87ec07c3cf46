"""A small safetensors reader/writer over numpy + ml_dtypes.

We read and write the format ourselves (8-byte header length, JSON header, raw little-endian
data) because the `safetensors` numpy API cannot represent bfloat16 or float8, which are exactly
the dtypes large checkpoints and FP8 exports use. Reads are memory-mapped, one tensor at a time,
so streaming tools (merge, export) hold about one tensor per file in memory; `MappedFile` maps a
whole file once for tools that visit every tensor. `SafetensorsWriter` takes tensors in order or
at their place from several threads, and copies a tensor between files inside the kernel.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import struct
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import ml_dtypes
import numpy as np

from compass_jax import jsonio
from compass_jax.atomic import atomic_open

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


_PAGE = mmap.PAGESIZE
_MADV_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)


class MappedFile:
    """A safetensors file mapped once, read-only, for a pass over many of its tensors: `array`
    is a view into the mapping (no system call per tensor) and `release` drops a finished
    tensor's pages from this process (the page cache keeps them), so resident memory stays
    near the tensors in use. Close it (or use it as a context manager) when done."""

    def __init__(self, file: SafetensorsFile):
        self.file = file
        with open(file.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            self._map = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) if size else None

    def array(self, name: str) -> np.ndarray:
        """The tensor as a read-only view of the mapping."""
        shape, dtype = self.file.shape(name), self.file.dtype(name)
        count = int(np.prod(shape, dtype=np.int64))
        if not count:
            return np.zeros(shape, dtype)
        flat = np.frombuffer(self._map, dtype.newbyteorder("<"), count, self.file.data_offset(name))
        return flat.reshape(shape)

    def release(self, name: str) -> None:
        """Unmap the whole pages that lie inside the tensor (its data stays in the page cache)."""
        begin = self.file.data_offset(name)
        lo, hi = -(-begin // _PAGE) * _PAGE, (begin + self.file.nbytes(name)) // _PAGE * _PAGE
        if self._map is not None and _MADV_DONTNEED is not None and hi > lo:
            self._map.madvise(_MADV_DONTNEED, lo, hi - lo)

    def close(self) -> None:
        if self._map is not None:
            with contextlib.suppress(BufferError):  # a view still alive keeps it until collected
                self._map.close()

    def __enter__(self) -> MappedFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
    with atomic_open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for array in tensors.values():
            f.write(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes())


def _copy_range(src: int, dst: int, count: int, src_at: int, dst_at: int) -> None:
    """Copy `count` bytes at `src_at` of `src` to `dst_at` of `dst`, inside the kernel where it
    can (`copy_file_range`), else through a bounded buffer."""
    copy_file_range = getattr(os, "copy_file_range", None)  # Linux only
    while count:
        done = 0
        if copy_file_range is not None:
            with contextlib.suppress(OSError):  # not between these files (old kernel, filesystem)
                done = copy_file_range(src, dst, count, src_at, dst_at)
        if not done:
            data = os.pread(src, min(count, 1 << 24), src_at)
            if not data:
                raise SafetensorsError(f"fd {src}: ends before {count} more bytes at {src_at}")
            done = _pwrite(dst, data, dst_at)
        count, src_at, dst_at = count - done, src_at + done, dst_at + done


def _pwrite(fd: int, data: Any, at: int) -> int:
    view = memoryview(data).cast("B")
    total = len(view)
    while view:
        written = os.pwrite(fd, view, at)
        view, at = view[written:], at + written
    return total


class SafetensorsWriter:
    """Write a safetensors file one tensor at a time, so a streaming tool never holds more than
    the tensor it is writing.

    The header goes first and carries every offset, so the names, dtypes and shapes are declared
    up front (`specs`, in file order). Tensors are then given in that order (`write`, or `begin`,
    `append`..., `end`), or at their place in any order and from any thread (`write_at`,
    `copy_at`), each element once. Use it as a context manager: the file appears at `path`
    only when the block ends with every tensor complete.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        specs: Sequence[tuple[str, Any, Sequence[int]]],
        metadata: Mapping[str, str] | None = None,
    ):
        self.path = os.fspath(path)
        self._specs = [(name, np.dtype(dtype), tuple(shape)) for name, dtype, shape in specs]
        self._index = {name: i for i, (name, _, _) in enumerate(self._specs)}
        self._sizes = [int(np.prod(shape, dtype=np.int64)) for _, _, shape in self._specs]
        self._written = [0] * len(self._specs)
        self._lock = threading.Lock()
        self._next = 0  # the sequential cursor: the tensor begun last, and how far it got
        self._cursor = 0
        self._stack = contextlib.ExitStack()
        self._fd = -1
        self._start = 0
        self._offsets: list[int] = []
        self._metadata = dict(metadata) if metadata else None

    def _header(self) -> bytes:
        header: dict[str, Any] = {"__metadata__": self._metadata} if self._metadata else {}
        offset = 0
        for (name, dtype, shape), count in zip(self._specs, self._sizes, strict=True):
            if dtype not in _NAMES:
                raise SafetensorsError(
                    f"{self.path}: tensor {name!r}: dtype {dtype} cannot be saved"
                )
            if name in header:
                raise SafetensorsError(f"{self.path}: tensor {name!r} declared twice")
            self._offsets.append(offset)
            header[name] = {
                "dtype": _NAMES[dtype],
                "shape": list(shape),
                "data_offsets": [offset, offset + count * dtype.itemsize],
            }
            offset += count * dtype.itemsize
        raw = json.dumps(header, separators=(",", ":")).encode()
        return raw + b" " * (-len(raw) % 8)  # data aligned to 8 bytes, as the reference writer

    def __enter__(self) -> SafetensorsWriter:
        raw = self._header()
        with self._stack:
            file = self._stack.enter_context(atomic_open(self.path, "wb", buffering=0))
            self._fd = file.fileno()
            self._start = _pwrite(self._fd, struct.pack("<Q", len(raw)) + raw, 0)
            self._stack = self._stack.pop_all()
        return self

    def _spec(self, name: str) -> int:
        if name not in self._index:
            raise SafetensorsError(f"{self.path}: tensor {name!r} was not declared")
        return self._index[name]

    def write_at(self, name: str, start: int, part: np.ndarray) -> None:
        """Elements `start, start + 1, ...` (C order) of tensor `name`, written at their place
        (`pwrite`, straight from `part`'s memory)."""
        i = self._spec(name)
        dtype = self._specs[i][1]
        part = np.asarray(part)
        if part.dtype != dtype or not 0 <= start <= start + part.size <= self._sizes[i]:
            raise SafetensorsError(
                f"{self.path}: tensor {name!r}: {part.size} {part.dtype} elements at {start} do "
                f"not fit its {self._sizes[i]} {dtype}"
            )
        data = np.ascontiguousarray(part, dtype=dtype.newbyteorder("<")).view(np.uint8)
        _pwrite(self._fd, data.data, self._start + self._offsets[i] + start * dtype.itemsize)
        with self._lock:
            self._written[i] += part.size

    def copy_at(self, name: str, source: SafetensorsFile, key: str | None = None) -> None:
        """Tensor `name`, copied from tensor `key` (default `name`) of `source` by the kernel
        (`copy_file_range`), never passing through this process's memory."""
        key = name if key is None else key
        i = self._spec(name)
        _, dtype, shape = self._specs[i]
        if (source.dtype(key), source.shape(key)) != (dtype, shape):
            raise SafetensorsError(
                f"{self.path}: tensor {name!r}: {source.path} has {key!r} as "
                f"{source.dtype(key)} {list(source.shape(key))}, declared {dtype} {list(shape)}"
            )
        at = self._start + self._offsets[i]
        with open(source.path, "rb") as f:
            _copy_range(f.fileno(), self._fd, source.nbytes(key), source.data_offset(key), at)
        with self._lock:
            self._written[i] += self._sizes[i]

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
        self._cursor = 0

    def append(self, part: np.ndarray) -> None:
        """The next elements (in C order) of the tensor begun last."""
        name, dtype, _ = self._specs[self._next]
        part = np.asarray(part)
        left = self._sizes[self._next] - self._cursor
        if part.dtype != dtype or part.size > left:
            raise SafetensorsError(
                f"{self.path}: tensor {name!r}: got {part.size} {part.dtype} elements, "
                f"{left} {dtype} still expected"
            )
        self.write_at(name, self._cursor, part)
        self._cursor += part.size

    def end(self) -> None:
        """Finish the tensor begun last; all its elements must have been given."""
        left = self._sizes[self._next] - self._cursor
        if left:
            name = self._specs[self._next][0]
            raise SafetensorsError(f"{self.path}: tensor {name!r}: {left} elements short")
        self._next += 1

    def __exit__(self, exc_type, exc, tb) -> bool:
        incomplete = [
            name
            for (name, _, _), size, done in zip(
                self._specs, self._sizes, self._written, strict=True
            )
            if done != size
        ]
        if exc_type is None and incomplete:
            error = SafetensorsError(
                f"{self.path}: {len(incomplete)} declared tensors never written: {incomplete[:5]}"
            )
            self._stack.__exit__(SafetensorsError, error, None)  # drops the partial file
            raise error
        return bool(self._stack.__exit__(exc_type, exc, tb))

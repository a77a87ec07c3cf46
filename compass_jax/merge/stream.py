"""Merging tensors that live on disk, one tensor at a time: the streaming form of
`compass_jax.merge.leaf`.

The scalar step is the very same jitted `coefficients` as in memory, so both paths merge with the
same formulas. The two data passes around it run here in numpy on the host, over memory-mapped
inputs in fixed-size chunks: they are bound by memory bandwidth, and a round trip through
device buffers would only add copies and fresh allocations. Pass 1 sums the inner products
(float32 products, float64 sums across chunks); pass 2 forms the merged chunks in buffers lent
by a `Sink` and hands them back to it in order. Memory holds the mapped pages of the tensor at
hand of each input plus a few chunk buffers; the pages are released when the tensor is done.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from compass_jax.merge.leaf import LeafOp, coefficients

CHUNK = 1 << 18  # elements: 1 MiB of float32, so a chunk's buffers stay in cache


class _Chunks:
    """Float32 views of `[lo, hi)` of every input, converted into reused buffers only when an
    input is not float32 already (a float32 memory map is used in place)."""

    def __init__(self, flats: Sequence[np.ndarray], size: int):
        self.flats = flats
        self.buffers = [
            None if x.dtype == np.float32 else np.empty(size, np.float32) for x in flats
        ]

    def __call__(self, lo: int, hi: int) -> list[np.ndarray]:
        out = []
        for x, buf in zip(self.flats, self.buffers, strict=True):
            if buf is None:
                out.append(x[lo:hi])
            else:
                out.append(buf[: hi - lo])
                np.copyto(out[-1], x[lo:hi], casting="unsafe")
        return out


def _dot(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.dot(x, y))


def _moments(kind: str, chunks: _Chunks, count: int, size: int) -> dict[str, np.ndarray]:
    m = len(chunks.flats) - (kind == "task")
    gram, sq = np.zeros((m, m)), np.zeros(2)
    da, db = (np.empty(size, np.float32) for _ in range(2))
    for lo in range(0, count, size):
        xs = chunks(lo, min(count, lo + size))
        if kind == "task":
            base, a, b = xs
            sq += (_dot(a, a), _dot(b, b))
            xs = [np.subtract(a, base, out=da[: len(a)]), np.subtract(b, base, out=db[: len(b)])]
        for i in range(m):
            for j in range(i, m):
                gram[i, j] += _dot(xs[i], xs[j])
    gram = np.triu(gram) + np.triu(gram, 1).T
    return {"gram": gram, "sq": sq} if kind == "task" else {"gram": gram}


@dataclasses.dataclass
class Prepared:
    """A tensor after pass 1: its inputs, the merge coefficients and the report's scalars."""

    chunks: _Chunks
    count: int
    size: int
    coeffs: np.ndarray
    stats: dict[str, Any]
    kept: int | None  # an input written as it is (keep_a / keep_b, or t at an end point)


def prepare(
    leaf_op: LeafOp,
    arrays: Sequence[np.ndarray],
    *,
    t: Any = None,
    weights: Any = None,
    chunk: int | None = None,
) -> Prepared:
    """Pass 1 and the scalar step for one tensor held by `arrays` (one per input, any float
    dtypes, typically memory maps)."""
    flats = [np.asarray(x).reshape(-1) for x in arrays]
    count = flats[0].size
    size = max(1, min(chunk or CHUNK, count))
    chunks = _Chunks(flats, size)
    m = _moments(leaf_op.kind, chunks, count, size)
    as_f32 = {k: np.asarray(v, np.float32) for k, v in m.items()}
    c, stats = jax.device_get(coefficients(leaf_op, as_f32, t, weights))
    kept = leaf_op.kept + leaf_op.offset if leaf_op.kept is not None else None
    if leaf_op.ends is not None and t is not None and float(t) in (0.0, 1.0):
        kept = leaf_op.ends[int(float(t))]  # the end points are the inputs, bit for bit
    return Prepared(chunks, count, size, np.asarray(c, np.float32), dict(stats), kept)


class Sink:
    """Where `emit` puts merged chunks: `buffer(dtype, size)` lends an array to fill, and
    `write(chunk, owner)` takes a filled chunk (a view of `owner`, or of an input when `owner`
    is None). This one writes at once and lends the same buffer again; a sink that writes
    later, from another thread, lends a fresh or recycled buffer each time instead."""

    def __init__(self, write: Callable[[np.ndarray], Any]):
        self._write = write
        self._buffers: dict[np.dtype, np.ndarray] = {}

    def buffer(self, dtype: np.dtype, size: int) -> np.ndarray:
        if dtype not in self._buffers or self._buffers[dtype].size < size:
            self._buffers[dtype] = np.empty(max(size, CHUNK), dtype)
        return self._buffers[dtype]

    def write(self, chunk: np.ndarray, owner: np.ndarray | None) -> None:
        self._write(chunk)


def emit(p: Prepared, sink: Sink, out_dtype: Any) -> dict[str, Any]:
    """Pass 2: the merged elements, in C order, to `sink` as `out_dtype` chunks; returns the
    report statistics (`angle_deg`, `norms_in`, `norm_out`) as host values."""
    out_dtype = np.dtype(out_dtype)
    f32 = np.dtype(np.float32)
    tmp, scratch = np.empty(p.size, f32), np.empty(p.size, f32)
    coeffs = [np.float32(1.0)] if p.kept is not None else list(p.coeffs)
    norm_sq = 0.0
    for lo in range(0, p.count, p.size):
        n = min(p.count, lo + p.size) - lo
        if p.kept is not None and p.chunks.flats[p.kept].dtype == out_dtype:
            owner, out = None, p.chunks.flats[p.kept][lo : lo + n]
        else:
            owner = sink.buffer(out_dtype, p.size)
            acc = owner[:n] if out_dtype == f32 else scratch[:n]
            xs = p.chunks(lo, lo + n)
            xs = xs if p.kept is None else [xs[p.kept]]
            np.multiply(xs[0], coeffs[0], out=acc)
            for x, ci in zip(xs[1:], coeffs[1:], strict=True):
                acc += np.multiply(x, ci, out=tmp[:n])
            out = owner[:n]
            if out_dtype != f32:
                np.copyto(out, acc, casting="unsafe")
        o32 = out if out.dtype == f32 else out.astype(f32)
        norm_sq += _dot(o32, o32)
        sink.write(out, owner)
    return {**p.stats, "norm_out": np.float32(np.sqrt(norm_sq))}


def merge_streamed(
    leaf_op: LeafOp,
    arrays: Sequence[np.ndarray],
    write: Callable[[np.ndarray], Any],
    out_dtype: Any,
    *,
    t: Any = None,
    weights: Any = None,
    chunk: int | None = None,
) -> dict[str, Any]:
    """`emit(prepare(...))`: merge one tensor, giving its elements to `write` in chunks."""
    prepared = prepare(leaf_op, arrays, t=t, weights=weights, chunk=chunk)
    return emit(prepared, Sink(write), out_dtype)

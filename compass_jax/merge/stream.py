"""Merging tensors that live on disk, one tensor at a time: the streaming form of
`compass_jax.merge.leaf`.

Both data passes run on the host, in numpy and BLAS, over memory-mapped inputs in chunks of
`CHUNK` elements (bound by memory bandwidth; device buffers would only add copies), and both
work on any range of a tensor's elements, so several threads can share one tensor:

1. `moments` sums a range's inner products (float32 products per chunk, float64 across chunks);
   `prepare` adds the ranges up and runs the scalar step, the very same jitted `coefficients`
   as in memory.
2. `emit` forms a range's merged chunks in buffers lent by a `Sink`, which writes them at their
   place. The arithmetic is the in-memory `combine` as XLA compiles it on CPU, where
   `c0 x0 + c1 x1` is contracted to `fma(c0, x0, c1 x1)` and every further input is one more
   fused multiply-add: exactly what BLAS `saxpy` computes, element for element. So given the
   same coefficients the two paths agree bit for bit (lerp, keep and the end points always
   do); spherical leaves, whose coefficients come from inner products summed in another order,
   agree to float32 rounding.

Nothing non-finite gets through: an input holding a NaN or an infinity fails `prepare`, a merged
chunk that is not finite fails `emit` before it is written, each with a `NonFinite` saying
which. Scratch buffers are per thread. BLAS calls run in the calling thread's BLAS pool: callers
that run passes on several threads limit it to one thread (`threadpoolctl`), as
`compass_jax.workflows.merge` does.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_dtypes
import numpy as np
from scipy.linalg import blas

from compass_jax.merge.leaf import LeafOp, MergeError, coefficients

CHUNK = 1 << 18  # elements (1 MiB of float32 per input): per-call overhead outweighs L2 misses
F32 = np.dtype(np.float32)
BF16 = np.dtype(ml_dtypes.bfloat16)
_local = threading.local()


def scratch(name: str, size: int, dtype: Any = F32) -> np.ndarray:
    """This thread's reusable buffer `name` of `size` elements (grown when needed)."""
    buffers = _local.__dict__.setdefault("buffers", {})
    buf = buffers.get(name)
    if buf is None or buf.size < size or buf.dtype != dtype:
        buf = buffers[name] = np.empty(size, dtype)
    return buf[:size]


class NonFinite(MergeError):
    """A NaN or an infinity in input `which` (an index into the inputs), or in the merged
    result (`which` is None)."""

    def __init__(self, which: int | None):
        self.which = which
        super().__init__("the merged tensor is not finite" if which is None else f"input {which}")


def _to_f32(x: np.ndarray, out: np.ndarray) -> None:
    if x.dtype == BF16:  # bfloat16 is the top half of a float32: a shift, not a conversion loop
        np.left_shift(x.view(np.uint16), 16, out=out.view(np.uint32), dtype=np.uint32)
    else:
        np.copyto(out, x, casting="unsafe")


def _from_f32(x: np.ndarray, out: np.ndarray, work: np.ndarray) -> None:
    """`x.astype(out.dtype)` into `out` (`work`: uint32 scratch); bfloat16 by integer
    round-to-nearest-even on the bits (what ml_dtypes and XLA compute for finite values; `emit`
    refuses the others)."""
    if out.dtype != BF16:
        np.copyto(out, x, casting="unsafe")
        return
    bits, u = x.view(np.uint32), work[: x.size]
    np.right_shift(bits, 16, out=u)
    np.bitwise_and(u, 1, out=u)
    np.add(u, 0x7FFF, out=u)
    np.add(u, bits, out=u)
    np.right_shift(u, 16, out=u)
    np.copyto(out.view(np.uint16), u, casting="unsafe")


def _f32(flats: Sequence[np.ndarray], lo: int, hi: int, which: Sequence[int]) -> list:
    """Float32 views of `[lo, hi)` of the inputs `which`: a float32 input in place, any other
    converted into this thread's buffer for it."""
    out = []
    for i in which:
        x = flats[i][lo:hi]
        if x.dtype != F32:
            buf = scratch(f"input{i}", hi - lo)
            _to_f32(x, buf)
            x = buf
        out.append(x)
    return out


def _finite(x: np.ndarray, size: int) -> bool:
    return all(np.isfinite(x[lo : lo + size]).all() for lo in range(0, x.size, size))


def _dot(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.dot(x, y))


def moments(kind: str, flats: Sequence[np.ndarray], lo: int, hi: int, size: int | None = None):
    """The inner products of elements `[lo, hi)` of the flat inputs, as a float64 vector
    (additive over ranges): the upper triangle of the Gram matrix of the inputs (of the task
    vectors `a - base`, `b - base` for "task", followed by `|a|^2`, `|b|^2`)."""
    size = size or CHUNK
    m = len(flats) - (kind == "task")
    pairs = [(i, j) for i in range(m) for j in range(i, m)]
    sums = [0.0] * (len(pairs) + 2 * (kind == "task"))
    with np.errstate(over="ignore", invalid="ignore"):  # non-finite sums are checked later
        for start in range(lo, hi, size):
            stop = min(hi, start + size)
            xs = _f32(flats, start, stop, range(len(flats)))
            if kind == "task":
                base, a, b = xs
                sums[-2] += _dot(a, a)
                sums[-1] += _dot(b, b)
                n = stop - start
                xs = [np.subtract(a, base, out=scratch("da", n)),
                      np.subtract(b, base, out=scratch("db", n))]  # fmt: skip
            for k, (i, j) in enumerate(pairs):
                sums[k] += _dot(xs[i], xs[j])
    return np.array(sums)


def _as_moments(kind: str, count: int, sums: np.ndarray) -> dict[str, np.ndarray]:
    """`moments`' vector as the float32 inputs of `coefficients`."""
    m = count - (kind == "task")
    gram = np.zeros((m, m), np.float32)
    rows, cols = np.triu_indices(m)
    gram[rows, cols] = gram[cols, rows] = sums[: len(rows)]
    return {"gram": gram, "sq": sums[-2:].astype(np.float32)} if kind == "task" else {"gram": gram}


def ranges(count: int, parts: int, size: int | None = None) -> list[tuple[int, int]]:
    """`[lo, hi)` ranges splitting `count` elements into at most `parts` runs of whole chunks."""
    size = size or CHUNK
    chunks = -(-count // size) if count else 0
    per = -(-chunks // max(1, min(parts, chunks))) if chunks else 1
    return [(lo, min(count, lo + per * size)) for lo in range(0, count, per * size)] or [(0, 0)]


@dataclasses.dataclass
class Prepared:
    """A tensor after pass 1: its flat inputs, the merge coefficients and the report's scalars."""

    flats: list[np.ndarray]
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
    sums: Sequence[np.ndarray] | None = None,
) -> Prepared:
    """Pass 1 and the scalar step for one tensor held by `arrays` (one per input, any float
    dtypes, typically memory maps); `sums` are the `moments` of ranges covering it when they
    were computed already (by other threads). `NonFinite` if an input is not finite."""
    flats = [np.asarray(x).reshape(-1) for x in arrays]
    count = flats[0].size
    size = max(1, min(chunk or CHUNK, count))
    total = sum(sums) if sums is not None else moments(leaf_op.kind, flats, 0, count, size)
    if not np.isfinite(total).all():  # a NaN or infinity, or values whose squares overflow
        for i, x in enumerate(flats):
            if not _finite(x, size):
                raise NonFinite(i)
    m = _as_moments(leaf_op.kind, len(flats), total)
    # np.asarray per leaf: a third of jax.device_get's cost on these few scalars
    c, stats = jax.tree.map(np.asarray, coefficients(leaf_op, m, t, weights))
    kept = leaf_op.kept + leaf_op.offset if leaf_op.kept is not None else None
    if leaf_op.ends is not None and t is not None and float(t) in (0.0, 1.0):
        kept = leaf_op.ends[int(float(t))]  # the end points are the inputs, bit for bit
    return Prepared(flats, count, size, np.asarray(c, np.float32), dict(stats), kept)


class Sink:
    """Where `emit` puts merged chunks: `buffer(dtype, size)` lends an array of `size` elements
    to fill, and `write(chunk, owner, start)` takes the filled chunk, elements `start, ...` of
    the tensor (a view of `owner`, or of an input when `owner` is None), before the next
    chunk is formed. This one hands a range's chunks to `write` in order; the merge command's
    writes each at its place in the output file."""

    def __init__(self, write: Callable[[np.ndarray], Any]):
        self._write = write

    def buffer(self, dtype: np.dtype, size: int) -> np.ndarray:
        return scratch(f"sink-{dtype}", size, dtype)

    def write(self, chunk: np.ndarray, owner: np.ndarray | None, start: int) -> None:
        self._write(chunk)


def _combine(xs: Sequence[np.ndarray], c: Sequence[np.float32], out: np.ndarray) -> None:
    """`out = sum_i c_i x_i` with XLA's contraction: `fma(c0, x0, c1 x1)`, then `fma(c_i, x_i,
    out)` for each further input (BLAS saxpy is that fused multiply-add)."""
    first = 1 if len(xs) > 1 else 0
    np.multiply(xs[first], c[first], out=out)
    for i in [0, *range(2, len(xs))] if first else []:
        blas.saxpy(xs[i], out, a=c[i])


def emit_range(p: Prepared, sink: Sink, out_dtype: Any, lo: int, hi: int) -> float:
    """Pass 2 over elements `[lo, hi)`: the merged elements to `sink` as `out_dtype`; returns
    the sum of squares of the values written. A merged chunk that is not finite raises
    `NonFinite` (`which` None) before it reaches the sink."""
    out_dtype = np.dtype(out_dtype)
    used = list(range(len(p.flats))) if p.kept is None else [p.kept]
    in_place = p.kept is not None and p.flats[p.kept].dtype == out_dtype
    converted = out_dtype != F32 and not in_place
    norm_sq = 0.0
    with np.errstate(over="ignore", invalid="ignore"):  # non-finite chunks are refused below
        for start in range(lo, hi, p.size):
            stop = min(hi, start + p.size)
            xs = _f32(p.flats, start, stop, used)
            if in_place:
                owner, out, o32 = None, p.flats[p.kept][start:stop], xs[0]
            else:
                owner = sink.buffer(out_dtype, stop - start)
                out = owner
                o32 = scratch("out32", stop - start) if converted else out
                if p.kept is None:
                    _combine(xs, p.coeffs, o32)
                else:
                    np.copyto(o32, xs[0])
                if converted:
                    _from_f32(o32, out, scratch("bits", stop - start, np.uint32))
            part = _dot(o32, o32)
            # A non-finite sum of squares: a NaN or infinity, or finite values whose squares
            # overflow; only the first kind is refused (in float32 and in the written dtype).
            if not math.isfinite(part) and not (np.isfinite(o32).all() and np.isfinite(out).all()):
                raise NonFinite(None)
            if converted:  # the norm of the values written
                _to_f32(out, o32)
                part = _dot(o32, o32)
            norm_sq += part
            sink.write(out, owner, start)
    return norm_sq


def emit(p: Prepared, sink: Sink, out_dtype: Any) -> dict[str, Any]:
    """Pass 2 over the whole tensor (`emit_range`); returns the report statistics
    (`angle_deg`, `norms_in`, `norm_out`) as host values."""
    return finish(p, emit_range(p, sink, out_dtype, 0, p.count))


def finish(p: Prepared, norm_sq: float) -> dict[str, Any]:
    """The report statistics, given the sum of squares of the written tensor."""
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

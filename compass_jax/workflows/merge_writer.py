"""The output side of a streaming merge: one output file written tensor by tensor by a pool of
worker threads (`write_file`).

A tensor is split into one range of whole chunks per worker (a small one stays whole). Each
worker sums its range's inner products, the workers meet (the last to arrive runs the scalar
step), and each forms its range of the merged tensor and writes it at its place in the output
file (`SafetensorsWriter.write_at`): reading, arithmetic and writing overlap on every core, with
no hand-over between threads and no ordering of the writes. A worker's range is read twice,
back to back, so a range that fits the cache comes from memory once. The workers spend their
time in numpy, BLAS or system calls, all of which release the GIL. Copied tensors never leave
the kernel (`copy_file_range`). At most two tensors are in flight, so memory holds about two
tensors' pages per input and a few chunk buffers per worker.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, wait
from typing import Any

import jax
import numpy as np

from compass_jax.interop.safetensors_io import MappedFile, SafetensorsFile, SafetensorsWriter
from compass_jax.merge import MergeError, Merger, report_row, stream
from compass_jax.workflows.merge_plan import Checkpoint, Entry, OutputFile


class _At(stream.Sink):
    """Writes a tensor's chunks at their place in the output file, from any thread, each while
    it is still in the cache (one chunk per write: larger blocks measured slower)."""

    def __init__(self, writer: SafetensorsWriter, key: str):
        self._writer, self._key = writer, key

    def write(self, part: np.ndarray, owner: np.ndarray | None, start: int) -> None:
        self._writer.write_at(self._key, start, part)


class _Merge:
    """One merged tensor, shared by the workers that each take a range of it."""

    def __init__(self, e: Entry, sources, arrays, merger: Merger, writer, dtype, parts: int):
        self.leaf_op, self.plan = merger.leaf_op(e.plan)
        self.key, self.sources, self.arrays = e.key, sources, arrays
        self.merger, self.writer, self.dtype = merger, writer, dtype
        self.ranges = stream.ranges(arrays[0].size, parts)
        self.sums: list[Any] = [None] * len(self.ranges)
        self.norms = [0.0] * len(self.ranges)
        self.prepared: stream.Prepared | None = None
        self.error: BaseException | None = None
        self.meet = threading.Barrier(len(self.ranges), action=self._prepare)

    def _prepare(self) -> None:  # run by the last worker to arrive, the others waiting
        try:
            self.prepared = stream.prepare(
                self.leaf_op, self.arrays, t=self.plan.t, weights=self.merger.weights,
                sums=self.sums,
            )  # fmt: skip
        except BaseException as e:
            self.error = e

    def run(self, k: int) -> None:
        lo, hi = self.ranges[k]
        try:
            flats = [x.reshape(-1) for x in self.arrays]
            self.sums[k] = stream.moments(self.leaf_op.kind, flats, lo, hi)
        except BaseException:
            self.meet.abort()
            raise
        self.meet.wait()
        if self.error is not None:
            raise self.error
        p = self.prepared
        if p.kept is not None and p.flats[p.kept].dtype == self.dtype:
            if k == 0:  # an input written as it is: copied by the kernel
                self.writer.copy_at(self.key, *self.sources[p.kept])
            return
        self.norms[k] = stream.emit_range(p, _At(self.writer, self.key), self.dtype, lo, hi)

    def stats(self) -> dict[str, Any]:
        p = self.prepared
        if p.kept is not None and p.flats[p.kept].dtype == self.dtype:
            return {**p.stats, "norm_out": p.stats["norms_in"][p.kept - self.leaf_op.offset]}
        return stream.finish(p, sum(self.norms))


def _not_finite(err: stream.NonFinite, e: Entry, sources) -> MergeError:
    if err.which is None:
        return MergeError(
            f"{e.key} ({e.path}): the merged tensor is not finite (NaN or infinity); "
            "nothing was written"
        )
    st, key = sources[err.which]
    return MergeError(
        f"{st.path}: tensor {key!r} holds NaN or infinite values; merge inputs must be finite "
        "(nothing was written)"
    )


def write_file(
    unit: OutputFile,
    dst_dir: str,
    inputs: Sequence[Checkpoint],
    merger: Merger,
    maps: Mapping[str, MappedFile],
    pool: Executor,
    workers: int,
) -> Iterator[tuple[dict[str, Any], int]]:
    """Write `unit` into `dst_dir` with `pool` (`workers` threads), yielding `(report row,
    bytes)` per tensor in file order."""
    st = unit.source
    specs = [(e.key, st.dtype(e.key), st.shape(e.key)) for e in unit.entries]
    os.makedirs(os.path.dirname(os.path.join(dst_dir, unit.name)), exist_ok=True)
    with SafetensorsWriter(os.path.join(dst_dir, unit.name), specs, st.metadata) as writer:
        flight: collections.deque = collections.deque()
        try:
            for e in unit.entries:
                flight.append(_start(e, st, writer, inputs, merger, maps, pool, workers))
                if len(flight) > 1:  # this tensor's pass 1 runs while the last one's pass 2 does
                    yield _done(*flight.popleft(), unit, maps)
            while flight:
                yield _done(*flight.popleft(), unit, maps)
        finally:
            wait([f for item in flight for f in item[2]])  # nothing may write after the close


def _start(e: Entry, st: SafetensorsFile, writer, inputs, merger, maps, pool, workers):
    if e.plan is None:
        return e, None, [pool.submit(writer.copy_at, e.key, st)]
    sources = [m.tensors[e.name] for m in inputs]
    arrays = [maps[f.path].array(k) for f, k in sources]
    job = _Merge(e, sources, arrays, merger, writer, st.dtype(e.key), workers)
    return e, job, [pool.submit(job.run, k) for k in range(len(job.ranges))]


def _done(e: Entry, job: _Merge | None, futures: list[Future], unit: OutputFile, maps):
    wait(futures)  # every worker of this tensor, even after an error: none may write later
    errors = [err for f in futures if (err := f.exception()) is not None]
    causes = [x for x in errors if not isinstance(x, threading.BrokenBarrierError)]
    if errors:  # the cause, not the siblings' broken barrier
        err = (causes or errors)[0]
        if isinstance(err, stream.NonFinite):
            raise _not_finite(err, e, job.sources) from None
        raise err
    st = unit.source
    where = {"key": e.key, "file": unit.name}
    shape, dtype = st.shape(e.key), st.dtype(e.key)
    if job is None:
        row = {"path": e.path, "shape": list(shape), "dtype": str(dtype)}
        return {**where, **row, "op": "copy", "why": e.why}, st.nbytes(e.key)
    for f, k in job.sources:  # the page cache keeps the pages; this process lets go
        maps[f.path].release(k)
    row = report_row(e.path, jax.ShapeDtypeStruct(shape, dtype), job.plan, job.stats())
    return {**where, **row}, st.nbytes(e.key)

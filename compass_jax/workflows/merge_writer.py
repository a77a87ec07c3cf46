"""The output side of a streaming merge: one shard of the first model merged tensor by tensor
into the same-named output shard, with the arithmetic, the reads and the writes overlapped on
three threads (`write_shard`), and the writer thread itself (`BackgroundSink`)."""

from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np

from compass_jax.interop.keymap import strip_prefix
from compass_jax.interop.safetensors_io import SafetensorsFile, SafetensorsWriter
from compass_jax.merge import report_row, stream


class BackgroundSink(stream.Sink):
    """Writes chunks, in order, on one background thread, so the kernel's copies into the page
    cache overlap the arithmetic of the next chunks. Written buffers are recycled; a bounded
    queue keeps at most `depth` chunks in flight. The first error is raised again on `close`."""

    def __init__(self, writer: SafetensorsWriter, depth: int = 8):
        self._writer = writer
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._free: dict[np.dtype, list[np.ndarray]] = {}
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            fn, args, owner = item
            if self._error is None:  # after an error, drain without running, so put never hangs
                try:
                    fn(*args)
                except BaseException as e:
                    self._error = e
            if owner is not None:
                with self._lock:
                    self._free.setdefault(owner.dtype, []).append(owner)

    def buffer(self, dtype: np.dtype, size: int) -> np.ndarray:
        with self._lock:
            free = self._free.get(dtype)
            if free and free[-1].size >= size:
                return free.pop()
        return np.empty(max(size, stream.CHUNK), dtype)

    def write(self, chunk: np.ndarray, owner: np.ndarray | None) -> None:
        self.call(self._writer.append, chunk, owner=owner)

    def call(self, fn, *args, owner: np.ndarray | None = None) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((fn, args, owner))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


def write_shard(shard, src_dir, dst_dir, arch, inputs, plans, merger):
    """Merge the tensors of one shard of the first model into the same-named output shard.

    Three threads share the work: a worker runs pass 1 (inner products) of the next tensor,
    this thread combines the current one, and a writer thread writes its chunks. All three
    spend their time in numpy or in system calls, which release the GIL; the price is two
    tensors per input mapped at once and a few chunks in flight.
    """
    st = SafetensorsFile(shard)
    name = os.path.relpath(shard, src_dir)
    keys = sorted(st.names(), key=st.data_offset)  # the first model is read sequentially
    specs = [(k, st.dtype(k), st.shape(k)) for k in keys]

    def prepare(key):
        path, plan = plans[strip_prefix(arch, key)]
        if plan is None:
            return None
        leaf_op, used = merger.leaf_op(plan)
        arrays = [m.array(strip_prefix(arch, key)) for m in inputs]
        return path, used, stream.prepare(leaf_op, arrays, t=used.t, weights=merger.weights)

    with (
        SafetensorsWriter(os.path.join(dst_dir, name), specs, st.metadata) as writer,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        sink = BackgroundSink(writer)
        try:
            ahead = pool.submit(prepare, keys[0]) if keys else None
            for i, key in enumerate(keys):
                ready = ahead.result()
                ahead = pool.submit(prepare, keys[i + 1]) if i + 1 < len(keys) else None
                if ready is None:
                    sink.call(writer.write, key, st.read(key))
                    yield {"key": key, "file": name, "path": None, "op": "copy"}, st.nbytes(key)
                    continue
                path, used, prepared = ready
                sink.call(writer.begin, key)
                stats = stream.emit(prepared, sink, st.dtype(key))
                sink.call(writer.end)
                del ready, prepared  # this tensor's mappings go once its chunks are written
                shape = jax.ShapeDtypeStruct(st.shape(key), st.dtype(key))
                row = report_row(path, shape, used, stats)
                yield {"key": key, "file": name, **row}, st.nbytes(key)
        finally:
            sink.close()

"""Merge throughput: the streaming `compass-jax merge` (SLERP at t = 0.5 of two random float32
checkpoints at BERT-large width, `--gb` each) against a plain copy of the first checkpoint's file
(`shutil.copyfile`, which copies inside the kernel), in the same run.

Each round times the copy and the merge back to back, with the files in the page cache (they
were just written) and each output deleted outside the timed section. Reported per contender:
wall and CPU seconds (user + system, all threads) per round, output GB/s (GB = 1e9 bytes) and
CPU seconds per output GB; the merge also reads twice its output (two inputs). The ratio
merge / copy is given four ways: from the best rounds (the headline: the least disturbed run of
each), as the median of per-round ratios, from the medians, and from CPU seconds per GB (least
moved by other people's load, since waiting for a CPU costs no CPU time), and from an
idle-machine estimate: each contender's wall time on an idle machine with this many cores is at
least its busiest thread's CPU time and at least its CPU time over the cores (the threads' CPU
times are sampled from /proc every 50 ms: every 5 ms slowed the merge on a 2-core machine); a
pipeline whose threads never wait on each other reaches that bound, so the estimate is
optimistic where they do.

Contention accounting: the CPU time other processes used and the hypervisor stole during the
rounds (`benchmarks/_machine.py`), the CPU pressure (Linux PSI: the share of the time some
runnable task waited for a CPU) and the load averages. `quiet_rerun_needed` is true when others
used more than 10% of the CPUs or tasks waited more than 10% of the time: then only the CPU
seconds per GB are trustworthy. Never a CI gate.

    python benchmarks/merge_throughput.py --out /tmp/merge_throughput.json
    python benchmarks/merge_throughput.py --gb 0.3 --repeat 3      # quick
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import tempfile
import threading
import time

import _machine as m
import numpy as np

log = m.logger("merge_throughput")
HIDDEN, INTER, VOCAB, POSITIONS = 1024, 4096, 30522, 512


def bert_shapes(layers: int) -> dict[str, tuple[int, ...]]:
    """HF BertModel keys and shapes at BERT-large width."""
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (VOCAB, HIDDEN),
        "embeddings.position_embeddings.weight": (POSITIONS, HIDDEN),
        "embeddings.token_type_embeddings.weight": (2, HIDDEN),
        "embeddings.LayerNorm.weight": (HIDDEN,),
        "embeddings.LayerNorm.bias": (HIDDEN,),
    }
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for name in ("self.query", "self.key", "self.value", "output.dense"):
            shapes[f"{p}attention.{name}.weight"] = (HIDDEN, HIDDEN)
            shapes[f"{p}attention.{name}.bias"] = (HIDDEN,)
        shapes[f"{p}intermediate.dense.weight"] = (INTER, HIDDEN)
        shapes[f"{p}intermediate.dense.bias"] = (INTER,)
        shapes[f"{p}output.dense.weight"] = (HIDDEN, INTER)
        shapes[f"{p}output.dense.bias"] = (HIDDEN,)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[f"{p}{norm}.weight"] = (HIDDEN,)
            shapes[f"{p}{norm}.bias"] = (HIDDEN,)
    return shapes


def layers_for(gigabytes: float) -> int:
    fixed = 4 * HIDDEN * (VOCAB + POSITIONS + 2)
    per_layer = 4 * (4 * HIDDEN * HIDDEN + 2 * HIDDEN * INTER + 9 * HIDDEN + INTER)
    return max(1, math.ceil((gigabytes * 1e9 - fixed) / per_layer))


def write_model(path: str, layers: int, seed: int) -> int:
    from transformers import BertConfig

    from compass_jax.interop.safetensors_io import SafetensorsWriter

    os.makedirs(path)
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=layers,
                     num_attention_heads=16, intermediate_size=INTER)  # fmt: skip
    cfg.to_json_file(os.path.join(path, "config.json"))
    shapes = bert_shapes(layers)
    rng = np.random.default_rng(seed)
    specs = [(k, np.float32, s) for k, s in shapes.items()]
    with SafetensorsWriter(os.path.join(path, "model.safetensors"), specs, {"format": "pt"}) as w:
        for key, shape in shapes.items():
            w.write(key, rng.standard_normal(shape, np.float32))
    return os.path.getsize(os.path.join(path, "model.safetensors"))


def cpu_pressure_us() -> float | None:
    """Microseconds some runnable task waited for a CPU, since boot (Linux PSI)."""
    try:
        with open("/proc/pressure/cpu", encoding="utf-8") as f:
            return float(f.readline().split("total=")[1])
    except (OSError, IndexError, ValueError):
        return None


def _thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of each live thread of this process, by thread id."""
    tick, out = os.sysconf("SC_CLK_TCK"), {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat", encoding="utf-8") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[tid] = (int(fields[11]) + int(fields[12])) / tick
    return out


class ThreadCPU:
    """Each thread's CPU seconds during a `with` block, sampled every 50 ms (threads that end
    inside the block keep their last sample). The busiest thread's CPU time bounds the wall
    time the block would take on an idle machine with enough cores, whatever the neighbours do."""

    def __enter__(self) -> ThreadCPU:
        self._start, self._last = _thread_cpu(), {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.05):
            self._last.update(_thread_cpu())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._last.update(_thread_cpu())
        used = {t: c - self._start.get(t, 0.0) for t, c in self._last.items()}
        used.pop(str(self._thread.native_id), None)
        self.busiest = max(used.values(), default=0.0)


def timed(fn) -> tuple[float, float, float]:
    """(wall s, this process's CPU s over all its threads, the busiest thread's CPU s)."""
    with m.Timer() as timer, ThreadCPU() as threads:
        fn()
    return timer.wall, timer.cpu, threads.busiest


def contender(walls: list[float], cpus: list[float], busiest: list[float], size: int) -> dict:
    """Timings of one contender; `idle_machine_estimate_s` is the wall time it would need
    on an idle machine with `cores` CPUs: at least its busiest thread's CPU time, and at least
    its CPU time spread over all cores (the medians of the rounds)."""
    cores = len(os.sched_getaffinity(0))
    estimate = max(statistics.median(busiest), statistics.median(cpus) / cores)
    return {
        **m.summarize(walls),
        "cpu_seconds": [round(c, 3) for c in cpus],
        "busiest_thread_cpu_seconds": [round(c, 3) for c in busiest],
        "gb_per_s": round(size / min(walls) / 1e9, 3),
        "cpu_seconds_per_gb": round(statistics.median(cpus) / (size / 1e9), 3),
        "idle_machine_estimate_s": round(estimate, 3),
        "idle_machine_estimate_gb_per_s": round(size / estimate / 1e9, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gb", type=float, default=1.0, help="size of each input checkpoint")
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds")
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    parser.add_argument("--workers", type=int, default=None, help="merge threads (default: all)")
    m.add_quiet_arguments(parser)
    args = parser.parse_args()

    from compass_jax.workflows.merge import merge_checkpoints

    quiet = m.wait_for_quiet(args.max_load, args.max_wait_s, log)
    machine = m.machine_info(with_torch=False)
    scratch = tempfile.mkdtemp(prefix="merge-bench-", dir=args.dir)
    try:
        layers = layers_for(args.gb)
        start = time.perf_counter()
        a, b = os.path.join(scratch, "a"), os.path.join(scratch, "b")
        size = write_model(a, layers, 0)
        write_model(b, layers, 1)
        generate = time.perf_counter() - start
        copied, merged = os.path.join(scratch, "copy.safetensors"), os.path.join(scratch, "m")
        merge = lambda: merge_checkpoints(
            [a, b], merged, t=0.5, progress=False, workers=args.workers
        )
        copy = lambda: shutil.copyfile(os.path.join(a, "model.safetensors"), copied)
        workers = merge()["workers"]  # compiles the scalar step once; not timed
        shutil.rmtree(merged)

        walls: dict[str, list[float]] = {"copy": [], "merge": []}
        cpus: dict[str, list[float]] = {"copy": [], "merge": []}
        busiest: dict[str, list[float]] = {"copy": [], "merge": []}
        snapshot, pressure = m.cpu_snapshot(), cpu_pressure_us()
        for i in range(args.repeat):
            for name, fn in (("copy", copy), ("merge", merge))[:: 1 if i % 2 == 0 else -1]:
                wall, cpu, busy = timed(fn)
                walls[name].append(wall)
                cpus[name].append(cpu)
                busiest[name].append(busy)
                shutil.rmtree(merged, ignore_errors=True)  # deleting is not part of either
                if os.path.exists(copied):
                    os.remove(copied)
            log(f"round {i}: copy {walls['copy'][-1]:.3f} s, merge {walls['merge'][-1]:.3f} s")
        contention = m.contention_since(snapshot)
        waited = cpu_pressure_us()
        if pressure is not None and waited is not None:
            share = (waited - pressure) / 1e6 / contention["wall_s"]
            contention["cpu_pressure_share"] = round(share, 3)
        disturbed = contention["other_processes_cpu_share"] > 0.1 or (
            contention.get("cpu_pressure_share", 0.0) > 0.1
        )
        copy_result = contender(walls["copy"], cpus["copy"], busiest["copy"], size)
        merge_result = contender(walls["merge"], cpus["merge"], busiest["merge"], size)
        merge_result["input_gb_per_s"] = round(2 * merge_result["gb_per_s"], 3)
        merge_result["workers"] = workers
        median = statistics.median
        ratios = {
            "best_rounds": round(min(walls["copy"]) / min(walls["merge"]), 3),
            "median_of_round_ratios": m.paired_ratio(walls["copy"], walls["merge"]),
            "medians": round(median(walls["copy"]) / median(walls["merge"]), 3),
            "cpu_seconds_per_gb": round(
                copy_result["cpu_seconds_per_gb"] / merge_result["cpu_seconds_per_gb"], 3
            ),
            "idle_machine_estimate": round(
                copy_result["idle_machine_estimate_s"] / merge_result["idle_machine_estimate_s"], 3
            ),
        }
        checkpoint = {"bytes": size, "layers": layers, "width": HIDDEN, "dtype": "float32",
                      "tensors": len(bert_shapes(layers))}  # fmt: skip
        report = {
            "benchmark": "merge_throughput",
            "machine": machine,
            "quiet": quiet,
            "checkpoint": checkpoint,
            "generate_seconds": round(generate, 2),
            "copy": copy_result,
            "merge_slerp": merge_result,
            "ratio_merge_to_copy": ratios,
            "target_ratio": 0.6,
            "contention": contention,
            "quiet_rerun_needed": disturbed,
        }
        m.emit(report, args.out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

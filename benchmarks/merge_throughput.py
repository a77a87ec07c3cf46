"""Merge throughput: the streaming `compass-jax merge` (SLERP of two random float32 checkpoints
of at least 1 GB each) against a plain copy of the same checkpoint file, in the same run.

Prints JSON. Throughput is output bytes per second (GB = 1e9 bytes) for both, so the ratio says
how close merging comes to the cost of just writing the result; the merge also reads twice that
(two inputs). Both run with the files in the page cache (they were just written), best of
`--repeat` runs; CPU seconds (user + system, all threads) are given too, since on a shared
machine the wall clock mostly measures the neighbours. Never a CI gate.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import tempfile
import time

import numpy as np

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


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import jax

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gb", type=float, default=1.0, help="size of each input checkpoint")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    args = parser.parse_args()

    from compass_jax.workflows.merge import merge_checkpoints

    scratch = tempfile.mkdtemp(prefix="merge-bench-", dir=args.dir)
    try:
        layers = layers_for(args.gb)
        start = time.perf_counter()
        size = write_model(os.path.join(scratch, "a"), layers, 0)
        write_model(os.path.join(scratch, "b"), layers, 1)
        generate = time.perf_counter() - start

        cpu = lambda: sum(os.times()[:2])  # user + system of this process
        copy_times, merge_times, copy_cpu, merge_cpu = [], [], [], []
        for _ in range(args.repeat):
            target = os.path.join(scratch, "copy.safetensors")
            start, cpu0 = time.perf_counter(), cpu()
            shutil.copyfile(os.path.join(scratch, "a", "model.safetensors"), target)
            copy_times.append(time.perf_counter() - start)
            copy_cpu.append(cpu() - cpu0)
            os.remove(target)

            merged_dir = os.path.join(scratch, "merged")
            shutil.rmtree(merged_dir, ignore_errors=True)  # deleting is not part of merging
            start, cpu0 = time.perf_counter(), cpu()
            merge_checkpoints(
                [os.path.join(scratch, "a"), os.path.join(scratch, "b")],
                merged_dir,
                t=0.5,
                progress=False,
            )
            merge_times.append(time.perf_counter() - start)
            merge_cpu.append(cpu() - cpu0)
        merged = os.path.getsize(os.path.join(scratch, "merged", "model.safetensors"))
        assert merged == size, (merged, size)
        copy_rate, merge_rate = size / min(copy_times) / 1e9, size / min(merge_times) / 1e9
        print(json.dumps({
            "benchmark": "merge_throughput",
            "machine": machine(),
            "checkpoint": {"bytes": size, "layers": layers, "width": HIDDEN,
                           "tensors": len(bert_shapes(layers)), "dtype": "float32"},
            "generate_seconds": round(generate, 2),
            "copy": {"seconds": [round(t, 3) for t in copy_times],
                     "cpu_seconds": [round(t, 3) for t in copy_cpu],
                     "gb_per_s": round(copy_rate, 3)},
            "merge_slerp": {"seconds": [round(t, 3) for t in merge_times],
                            "cpu_seconds": [round(t, 3) for t in merge_cpu],
                            "gb_per_s": round(merge_rate, 3),
                            "input_gb_per_s": round(2 * merge_rate, 3)},
            "ratio_merge_to_copy": round(merge_rate / copy_rate, 3),
            "target_ratio": 0.5,
        }, indent=1))  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

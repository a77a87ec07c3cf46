"""Locked-trunk training step vs the full step with the same frozen layers.

The demo's setting by default: multilingual-e5-small (12 layers), embeddings and layers 0..8
frozen so the top 3 train, global batch 256 of (query, positive) pairs, GradCache chunks of 128,
24 tokens, float32, one device. `optim.frozen` makes `compass_jax.train` lock the trunk by
itself (`compass_jax.trunk`); the full step is the same spec with `trunk=None`, stepping the
same state (the frozen layers never change, so the cache stays valid).

Two passes over the same `--steps` batches (labelled classification pairs through the library's
data path), full and locked interleaved in each round in alternating order:

    cold   the trunk cache starts empty: the locked step computes the trunk states of every
           text it has not seen (batched, jitted; repeated texts such as category names hit)
    warm   the same batches again: every text a cache hit

Each step is timed to `jax.block_until_ready` of the new state and metrics; the locked step's
time includes its host work (cache look-ups, laying states out, the transfer). Compiles are kept
out of the timed passes: an untimed first pass runs the locked step over the same batches (the
trunk programs of the cold pass's shapes compile there), then the cache is emptied. The
speed-up should approach what skipping the trunk saves: the full step runs the 12 layers forward
twice (GradCache) and the top 3 backward, the locked one the top 3 only.

Run from the repository root (JSON on stdout, progress on stderr):

    python benchmarks/train_locked_trunk.py --out /tmp/train_locked_trunk.json
    python benchmarks/train_locked_trunk.py --steps 2 --batch 64 --chunk 32   # a quick look
"""

from __future__ import annotations

import argparse
import os
import tempfile
import warnings
from collections.abc import Sequence
from typing import Any

import _machine as m
import _training as tr
import numpy as np

log = m.logger("train_locked_trunk")


def frozen_rules(num_layers: int, trained: int) -> tuple[str, ...]:
    """The demo's rules (`workflows/demo/training.py`): embeddings and all but the top layers."""
    lower = "|".join(map(str, range(num_layers - trained)))
    return (r"^embeddings\.", rf"^layers\.({lower})\.")


def time_steps(args, data: str) -> dict[str, Any]:

    from compass_jax import trunk
    from compass_jax.interop.tokenizer import load_tokenizer
    from compass_jax.losses import LossSettings

    model_cfg, params, model_dir, pooling = tr.load(args.model)
    tokenizer = load_tokenizer(model_dir)
    locals_ = tr.tokenized_batches(
        data, tokenizer, batch_size=args.batch, count=args.steps + 1, seq=args.seq,
        task="classification", negatives=0,
    )  # fmt: skip
    locked = tr.Harness.create(
        model_cfg, params, pooling, chunk=args.chunk, loss=LossSettings(temperature=0.02),
        dtype=args.dtype, frozen=frozen_rules(model_cfg.num_layers, args.trained_layers),
    )  # fmt: skip
    depth = locked.spec.trunk
    if depth != model_cfg.num_layers - args.trained_layers:
        raise SystemExit(f"the frozen rules did not lock a trunk of the lower layers ({depth})")
    harnesses = {"full": locked.with_spec(trunk=None), "locked": locked}
    batches = [locked.put(b) for b in locals_]
    # Untimed: the full step compiles; the locked one runs over every batch, which compiles it
    # and the trunk programs of exactly the shapes the cold pass will meet (the same texts miss
    # in the same order once the cache is emptied); then the cache is emptied, programs kept.
    first_pass = {}
    for name, runs in (("full", batches[-1:]), ("locked", batches[:-1])):
        with m.Timer() as t:
            for batch in runs:
                harnesses[name].run(batch)
        first_pass[name] = round(t.wall, 2)
        log(f"{name}: untimed first pass (compiles) {t.wall:.1f} s")
    training = locked.training
    training.trunk_cache = training.locked.cache = trunk.Cache(training.trunk_cache.max_bytes)
    times: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    hit_share = {}
    start = m.cpu_snapshot()
    for phase in ("cold", "warm"):
        cache = training.trunk_cache
        before = cache.hits, cache.misses
        for r in range(args.steps):
            order = ("full", "locked") if r % 2 == 0 else ("locked", "full")
            for name in order:
                with m.Timer() as t:
                    _, met = harnesses[name].run(batches[r])
                key = name if name == "full" else f"locked_{phase}"
                times.setdefault(key, []).append(t.wall)
                cpu.setdefault(key, []).append(t.cpu)
                log(f"{phase} round {r + 1}/{args.steps} {name}: {t.wall:.2f} s wall "
                    f"(loss {met['loss']:.4f})")  # fmt: skip
        hits, misses = cache.hits - before[0], cache.misses - before[1]
        hit_share[phase] = round(hits / max(hits + misses, 1), 3)
    contention = m.contention_since(start)
    cache = training.trunk_cache
    texts = len(cache.entries)
    full_times = times["full"]
    cpu_s = lambda key: [round(c, 2) for c in cpu[key]]
    results = {key: {**m.summarize(v), "cpu_s": cpu_s(key)} for key, v in times.items()}
    speedup = lambda key: {
        "median_wall": round(float(np.median(full_times) / np.median(times[key])), 3),
        "median_cpu": round(float(np.median(cpu["full"]) / np.median(cpu[key])), 3),
    }  # fmt: skip
    n = model_cfg.num_layers
    return {
        "trunk_layers": depth,
        "trained_layers": n - depth,
        "untimed_first_pass_s": first_pass,
        "steps": results,
        "speedup_over_full": {"cold": speedup("locked_cold"), "warm": speedup("locked_warm")},
        # Work per step in layer-passes: GradCache runs every layer forward twice, and the
        # backward (about 2 forwards) stops at the lowest trained layer.
        "ideal_warm_speedup": round((2 * n + 2 * (n - depth)) / (4 * (n - depth)), 3),
        "cache_hit_share": hit_share,
        "cache": {
            "texts": texts,
            "bytes": cache.bytes,
            "bytes_per_text": round(cache.bytes / max(texts, 1)),
            "dtype": args.dtype,
            "bytes_per_token": model_cfg.hidden_size
            * np.dtype("float32" if args.dtype == "float32" else "float16").itemsize,
        },
        "contention": contention,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="multilingual-e5-small")
    p.add_argument("--trained-layers", type=int, default=3)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--chunk", type=int, default=128)
    p.add_argument("--seq", type=int, default=24)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--steps", type=int, default=4, help="timed rounds per pass")
    m.add_quiet_arguments(p)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message=".*donated buffers.*")
    settings = {
        "model": args.model, "trained_layers": args.trained_layers, "batch": args.batch,
        "chunk": args.chunk, "seq": args.seq, "hard_negatives": 0, "dtype": args.dtype,
        "mesh": "1 device (1 x 1)", "timed_rounds_per_pass": args.steps,
        "temperature": 0.02, "data": "classification task (labelled pairs)",
    }  # fmt: skip
    what = "steps/s of the locked-trunk step vs the full step with the same frozen layers"
    report = m.open_report("train_locked_trunk", what, settings, args, log)
    with tempfile.TemporaryDirectory(prefix="train_locked_trunk_") as tmp:
        data = str(tr.make_pairs(os.path.join(tmp, "pairs.jsonl"), n=4096))
        report["step"] = time_steps(args, data)
    m.close_report(report, args.out)
    return report


if __name__ == "__main__":
    main()

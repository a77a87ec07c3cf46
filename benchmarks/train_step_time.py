"""Training step time: CAM vs plain InfoNCE, and GradCache vs the plain (whole-batch) step.

Four jitted steps are built on one device for the same model (default all-MiniLM-L6-v2, float32)
and the same global batch (default 128 triples: query, positive, one hard negative; `--seq` 32
tokens; the issue's 256 is `--batch 256 --chunk 64`):

    gradcache_cam       gradcache_chunk=--chunk, LossSettings() masks (class + duplicate)
    gradcache_infonce   gradcache_chunk=--chunk,
                        LossSettings(class_mask=False, duplicate_mask=False)
    plain_cam           gradcache_chunk=None (activations of the whole batch kept), CAM
    plain_infonce       gradcache_chunk=None, plain InfoNCE

(temperature 0.05 everywhere). Batches come through the library's data path: a labelled JSONL
(classification-style records, so CAM's masks really fire; their counts are reported) read by
`PairReader` and tokenised by `tokenize_batch`, a different batch every step, placed on the device
before timing. Each step is compiled ahead of time (compile time reported), run for `--warmup`
untimed rounds, then `--steps` timed rounds; the four contenders are interleaved round by round (in
a rotating order) so a change in machine load hits all of them alike, and each time is the jitted
call up to `jax.block_until_ready` of the new state and metrics. Each timed step follows an
untimed step of the same program, as in a training loop: a step timed right after another
program's ran up to 15% slower (the rotation always put plain CAM after a GradCache step and
plain InfoNCE after plain CAM, which made CAM look 12% slower; timed alone, the two steps are
equal to 0.3%). Reported: median / min / max
wall times and the process's CPU seconds per step, model FLOP/s, and the ratios the issue targets
(CAM / InfoNCE <= 1.03, GradCache / plain <= 1.4), each four ways: from median wall times (the
headline), as the median of per-round ratios (contenders of a round see the same load), from the
fastest rounds, and from median CPU seconds (least moved by other people's load).

The step is dominated by the encoder, so a CAM overhead of a few percent of the loss vanishes
there, and under other people's load the step ratio's noise is larger than the overhead. A second
section times the loss alone (`cam_infonce_sharded`, value and gradient with respect to the
embeddings, on random unit vectors with the labels and text hashes of a real batch), CAM vs plain
InfoNCE, wall and process CPU seconds per call, at `--loss-batch` (where the masks' cost is
visible) and at the step's `--batch`: that one's CAM-minus-InfoNCE time over the GradCache CAM
step's is `ratios.cam_extra_loss_over_gradcache_step` (target <= 0.03), the masks' cost in the
step measured where it is not lost in the encoder's noise. Batches are packed as the trainer
packs them (`TrainConfig.pack`; `packed_real_token_share`).

Run from the repository root (JSON on stdout, progress on stderr; about 6 minutes on 2 cores):

    python benchmarks/train_step_time.py --out /tmp/train_step_time.json
    python benchmarks/train_step_time.py --batch 256 --chunk 64 --steps 5   # the issue's size
    python benchmarks/train_step_time.py --batch 32 --chunk 16 --steps 1 --loss-batch 1024  # quick
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from collections.abc import Sequence
from typing import Any

import _machine as m
import _training as tr
import numpy as np

log = m.logger("train_step_time")

CONTENDERS = ("gradcache_cam", "gradcache_infonce", "plain_cam", "plain_infonce")


def settings_for(name: str):
    from compass_jax.losses import LossSettings

    if name.endswith("_cam"):
        return LossSettings(temperature=0.05)
    return LossSettings(temperature=0.05, class_mask=False, duplicate_mask=False)


def time_steps(args, data: str) -> dict[str, Any]:
    from compass_jax.gradcache import row_unit
    from compass_jax.interop.tokenizer import load_tokenizer

    model_cfg, params, model_dir, pooling = tr.load(args.model)
    tokenizer = load_tokenizer(model_dir)
    rounds = args.warmup + args.steps
    tic = time.perf_counter()
    # Packed as the trainer packs them (rows in multiples of a quarter chunk).
    locals_ = tr.tokenized_batches(
        data, tokenizer, batch_size=args.batch, count=rounds, seq=args.seq, task="classification",
        pack=True, row_multiple=row_unit(args.chunk, 1),
    )  # fmt: skip
    tokenize_s = (time.perf_counter() - tic) / rounds
    real, computed = locals_[0].real_tokens()
    harnesses, compile_info = {}, {}
    for name in CONTENDERS:
        chunk = args.chunk if name.startswith("gradcache") else None
        h = tr.Harness.create(
            model_cfg, params, pooling, chunk=chunk, loss=settings_for(name), dtype=args.dtype
        )
        batches = [h.put(b) for b in locals_]
        log(f"compiling {name} ...")
        compile_info[name] = h.compile(batches[0])
        for batch in batches[1:]:  # packed row counts vary: every shape compiled before timing
            h.compile(batch)  # cached per shapes
        compile_info[name]["programs"] = len(h.training.compiled)
        log(f"  {compile_info[name]['compile_s']} s, {compile_info[name]['programs']} programs")
        harnesses[name] = (h, batches)
    times: dict[str, list[float]] = {n: [] for n in CONTENDERS}
    cpu: dict[str, list[float]] = {n: [] for n in CONTENDERS}
    metrics: dict[str, dict[str, float]] = {}
    start = m.cpu_snapshot()
    for r in range(rounds):
        order = CONTENDERS[r % 4 :] + CONTENDERS[: r % 4]
        for name in order:
            h, batches = harnesses[name]
            if r >= args.warmup:  # untimed: the timed step runs after its own program
                h.run(batches[r])
            with m.Timer() as t:
                _, met = h.run(batches[r])
            if r == 0:
                metrics[name] = met
            if r >= args.warmup:
                times[name].append(t.wall)
                cpu[name].append(t.cpu)
            log(
                f"round {r + 1}/{rounds} {name}: {t.wall:.2f} s wall, {t.cpu:.2f} s CPU "
                f"(loss {met['loss']:.4f})"
            )
    contention = m.contention_since(start)
    # FLOPs of the rows the steps computed (packed: fewer rows than texts), averaged over the
    # timed batches, whose row counts differ.
    rows = round(np.mean([b.real_tokens()[1] for b in locals_[args.warmup :]]) / args.seq)
    flops = {
        name: tr.step_flops(
            model_cfg, params, seq=args.seq, sequences=rows, gradcache=name.startswith("gradcache")
        )
        for name in CONTENDERS
    }
    results = {}
    for name in CONTENDERS:
        med = float(np.median(times[name]))
        results[name] = {
            **m.summarize(times[name]),
            "examples_per_s": round(args.batch / med, 1),
            "model_gflop_per_s": round(flops[name]["model_flops"] / med / 1e9, 1),
            "hardware_gflop_per_s": round(flops[name]["hardware_flops"] / med / 1e9, 1),
            "first_step": {
                k: round(metrics[name][k], 5)
                for k in ("loss", "masked_total", "masked_class", "masked_duplicate")
            },
            "cpu_s": [round(c, 2) for c in cpu[name]],
            "median_cpu_s": round(float(np.median(cpu[name])), 3),
            **compile_info[name],
        }

    def ratio(a: str, b: str) -> dict[str, float]:
        """a / b four ways: medians of wall times (the headline), the median of per-round
        ratios (with a 95% interval from the rounds), fastest rounds, and medians of the
        process's CPU seconds (with its interval)."""
        return {
            "median_wall": round(float(np.median(times[a]) / np.median(times[b])), 4),
            "paired_wall": m.paired_ratio(times[a], times[b]),
            "paired_wall_ci95": m.paired_ratio_ci95(times[a], times[b]),
            "paired_cpu_ci95": m.paired_ratio_ci95(cpu[a], cpu[b]),
            "min_wall": round(min(times[a]) / min(times[b]), 4),
            "median_cpu": round(float(np.median(cpu[a]) / np.median(cpu[b])), 4),
        }

    ratios = {
        "cam_over_infonce_gradcache": ratio("gradcache_cam", "gradcache_infonce"),
        "cam_over_infonce_plain": ratio("plain_cam", "plain_infonce"),
        "gradcache_over_plain_cam": ratio("gradcache_cam", "plain_cam"),
        "gradcache_over_plain_infonce": ratio("gradcache_infonce", "plain_infonce"),
        "gradcache_over_plain_hardware_flop_ratio": round(
            flops["gradcache_cam"]["hardware_flops"] / flops["plain_cam"]["hardware_flops"], 3
        ),
        "targets": {"cam_over_infonce": "<= 1.03", "gradcache_over_plain": "<= 1.4"},
    }
    return {
        "tokenize_s_per_batch": round(tokenize_s, 3),
        "packed_real_token_share": round(real / computed, 3),
        "flops_per_step": flops["plain_cam"]
        | {"gradcache_hardware_flops": flops["gradcache_cam"]["hardware_flops"]},
        "contention": contention,
        "contenders": results,
        "ratios": ratios,
    }


def time_loss(args, data: str, b: int) -> dict[str, Any]:
    """Value and gradient of the sharded loss alone for a batch of `b`, CAM vs plain InfoNCE:
    wall and process CPU seconds per call."""
    import jax
    import jax.numpy as jnp

    from compass_jax import sharding, train
    from compass_jax.interop.tokenizer import load_tokenizer
    from compass_jax.losses import cam_infonce_sharded

    d = args.loss_dim
    tokenizer = load_tokenizer(tr.load(args.model)[2])  # the model's tokenizer (or tiny's)
    local = tr.tokenized_batches(
        data, tokenizer, batch_size=b, count=1, seq=8, task="classification"
    )[0]
    mesh = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
    rng = np.random.default_rng(0)

    def unit(*shape):
        x = rng.standard_normal(shape, np.float32)
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    embs = (unit(b, d), unit(b, d), unit(b, d))

    def make(settings):
        def loss(q, p, n):
            cb = train.contrastive_batch({"query": q, "positive": p, "negatives": n}, local)
            return cam_infonce_sharded(cb, settings, mesh, block=tuple(args.loss_block))

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))

    fns = {"cam": make(settings_for("x_cam")), "infonce": make(settings_for("x_infonce"))}
    args_dev = tuple(jnp.asarray(e) for e in embs)
    out: dict[str, Any] = {}
    for name, fn in fns.items():
        tic = time.perf_counter()
        (loss, met), _ = jax.block_until_ready(fn(*args_dev))
        out[name] = {
            "first_call_s": round(time.perf_counter() - tic, 2),
            "loss": round(float(loss), 5),
            "masked_total": float(met["masked_total"]),
        }
    # Each sample runs enough calls to last about 0.2 s: the CPU clock ticks in 10 ms.
    with m.Timer() as t:
        jax.block_until_ready(fns["cam"](*args_dev))
    calls = max(1, int(np.ceil(0.2 / max(t.wall, 1e-6))))
    times: dict[str, list[float]] = {n: [] for n in fns}
    cpu: dict[str, list[float]] = {n: [] for n in fns}
    for r in range(args.loss_repeats):
        for name in list(fns)[r % 2 :] + list(fns)[: r % 2]:
            with m.Timer() as t:
                for _ in range(calls):
                    jax.block_until_ready(fns[name](*args_dev))
            times[name].append(t.wall / calls)
            cpu[name].append(t.cpu / calls)
    for name in fns:
        out[name].update(m.summarize(times[name]))
        out[name]["median_wall_s"] = float(np.median(times[name]))
        out[name]["median_cpu_s"] = float(np.median(cpu[name]))
    out["cam_over_infonce"] = {
        "median": round(out["cam"]["median_s"] / out["infonce"]["median_s"], 4),
        "paired": m.paired_ratio(times["cam"], times["infonce"]),
        "min": round(min(times["cam"]) / min(times["infonce"]), 4),
        "median_cpu": round(out["cam"]["median_cpu_s"] / out["infonce"]["median_cpu_s"], 4),
    }
    out["settings"] = {
        "batch": b,
        "dim": d,
        "hard_negatives": 1,
        "block": args.loss_block,
        "candidates_per_query": 2 * b,
        "calls_per_sample": calls,
    }
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument("--batch", type=int, default=128, help="global batch (triples)")
    p.add_argument("--chunk", type=int, default=32, help="GradCache chunk (global rows)")
    p.add_argument("--seq", type=int, default=32)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=3, help="timed rounds")
    p.add_argument("--loss-batch", type=int, default=4096)
    p.add_argument("--loss-dim", type=int, default=384)
    p.add_argument(
        "--loss-block", type=lambda s: [int(x) for x in s.split(",")], default=[128, 1024]
    )
    p.add_argument("--loss-repeats", type=int, default=10)
    p.add_argument("--skip-loss", action="store_true")
    m.add_quiet_arguments(p)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message=".*donated buffers.*")
    settings = {
        "model": args.model,
        "batch": args.batch,
        "chunk": args.chunk,
        "seq": args.seq,
        "hard_negatives": 1,
        "dtype": args.dtype,
        "mesh": "1 device (1 x 1)",
        "warmup_rounds": args.warmup,
        "timed_rounds": args.steps,
        "temperature": 0.05,
        "optimizer": "AdamW, constant lr 2e-5, clip 1.0",
        "data": "classification task",
    }
    what = "median step time: CAM vs plain InfoNCE, GradCache vs plain step"
    report = m.open_report("train_step_time", what, settings, args, log)
    with tempfile.TemporaryDirectory(prefix="train_step_time_") as tmp:
        data = str(tr.make_pairs(os.path.join(tmp, "pairs.jsonl"), n=4096))
        report["step"] = time_steps(args, data)
        if not args.skip_loss:
            log("loss alone ...")
            report["loss_only"] = time_loss(args, data, args.loss_batch)
            # The masks' cost in the step, measured where it is not lost in the encoder's noise:
            # the loss alone at the step's batch, CAM minus InfoNCE, over the GradCache step.
            at_step = report["loss_only_step_batch"] = time_loss(args, data, args.batch)
            step = report["step"]["contenders"]["gradcache_cam"]
            extra = {k: at_step["cam"][k] - at_step["infonce"][k]
                     for k in ("median_wall_s", "median_cpu_s")}  # fmt: skip
            report["step"]["ratios"]["cam_extra_loss_over_gradcache_step"] = {
                "wall": round(extra["median_wall_s"] / step["median_s"], 5),
                "cpu": round(extra["median_cpu_s"] / step["median_cpu_s"], 5),
                "target": "<= 0.03",
            }
    m.close_report(report, args.out)
    return report


if __name__ == "__main__":
    main()

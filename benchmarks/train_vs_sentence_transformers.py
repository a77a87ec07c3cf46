"""Training throughput: compass-jax's GradCache step vs sentence-transformers'
`CachedMultipleNegativesRankingLoss` in PyTorch, on the same CPU, model, data and batch shape.

Both sides train all-MiniLM-L6-v2 (fp32 weights) on the same pre-tokenised global batches of
(query, positive, one hard negative) triples, every text padded/truncated to `--seq` tokens (the
same token ids on both sides, produced once by the library's `PairReader` + `tokenize_batch`), with
the same global batch, the same mini-batch (GradCache chunk) size and the same thread count.

* ours: the jitted `train.make_train_step` with `gradcache_chunk=--chunk`, plain InfoNCE
  (`LossSettings(temperature=0.05, class_mask=False, duplicate_mask=False)`), AdamW with
  global-norm clipping at 1.0, float32 compute; bfloat16 compute (`TrainConfig(dtype="bfloat16")`:
  bf16 matmuls with float32 accumulation, float32 master weights) is an extra row.
* peer: `SentenceTransformer` + `CachedMultipleNegativesRankingLoss(model, scale=20,
  mini_batch_size=--chunk)` (scale 20 = temperature 0.05, cosine similarity, in-batch positives and
  hard negatives as candidates: the same loss), `loss(features, labels).backward()`,
  `clip_grad_norm_(1.0)`, `torch.optim.AdamW.step()`, float32.

Two data sets, both timed in the same run:

* `full` (the headline): every text is lengthened with product words until it fills `--seq`
  tokens, so no padding is left and both sides compute exactly the same token grid.
* `natural` (the `*_natural` rows): the generator's natural lengths (8-20 tokens, about a third
  of the grid real). sentence-transformers trims each mini-batch to its longest text before
  embedding it; our step packs several texts into each row of `--seq` tokens, each tower into
  a multiple of a quarter `--chunk` rows, as the trainer does (`TrainConfig.pack`):
  `ours_float32_natural_packed`, the headline natural row. `ours_float32_natural` is the same
  step on the unpacked, padded grid (before packing). `settings.token_shares` gives real over
  computed tokens of each layout: padded, length buckets (`data.bucketing`'s rule: the power of
  two from 16 that holds the batch's longest text), the peer's trimmed mini-batches, packed.

Dropout is off on both sides (our default; the peer's dropout modules are set to p=0), so both
compute the same function and the first-step losses on the same batch must agree (both values are
reported, on the first `full` batch). Each step is timed to completion (`jax.block_until_ready`; the
torch step is synchronous), tokenisation excluded; contenders are interleaved round by round in a
rotating order after `--warmup` untimed rounds (ours compiles in its first), each timed step
right after an untimed step of the same contender (as in a training loop: a step timed after
another program's runs up to 15% slower, `train_step_time.py`), and the median of `--steps`
timed rounds gives examples per second. The ratio ours / peer targets >= 1.5x on `full`
and >= 1.2x on `natural`; it is
reported from median wall times (the headline), as the median of per-round ratios, from the fastest
rounds and from median CPU seconds of the process (least moved by other people's load).

To explain the ratio, the same run also measures each runtime's float32 matmul rate (and JAX's bf16
with float32 accumulation) at the encoder's largest matmul shape, `[chunk x seq, 384] @ [384,
1536]`, and its two backward products: the step cannot beat its runtime's matmul rate by much.

Run from the repository root (JSON on stdout, progress on stderr; about 6 minutes on 2 cores):

    python benchmarks/train_vs_sentence_transformers.py --out /tmp/train_vs_st.json
    python benchmarks/train_vs_sentence_transformers.py --batch 32 --chunk 16 --steps 1  # quick
"""

from __future__ import annotations

import argparse
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import _machine as m
import _training as tr
import numpy as np

log = m.logger("train_vs_st")
MODEL = "all-MiniLM-L6-v2"
TOWERS = ("query", "positive", "negative")


Steps = dict[str, Callable[[int], float]]


def ours(args, batch_sets: dict[str, list], dtype: str) -> tuple[Steps, dict[str, Any]]:
    """One jitted step per data set, sharing one training state; every batch shape (packed
    towers' row counts vary) compiled before anything is timed."""
    from compass_jax.losses import LossSettings

    model_cfg, params, _, pooling = tr.load(MODEL)
    loss = LossSettings(temperature=1 / args.scale, class_mask=False, duplicate_mask=False)
    h = tr.Harness.create(
        model_cfg, params, pooling, chunk=args.chunk, loss=loss, dtype=dtype, learning_rate=args.lr
    )
    placed = {name: [h.put(b) for b in batches] for name, batches in batch_sets.items()}
    log(f"compiling ours ({dtype}) ...")
    info = h.compile(placed["full"][0])
    for batches in placed.values():
        for batch in batches:
            h.compile(batch)  # cached per shapes
    info["programs"] = len(h.training.compiled)
    info["flops"] = tr.step_flops(
        model_cfg, params, seq=args.seq, sequences=3 * args.batch, gradcache=True
    )

    def stepper(batches):
        return lambda i: h.run(batches[i])[1]["loss"]

    return {name: stepper(batches) for name, batches in placed.items()}, info


def peer(args, batch_sets: dict[str, list]) -> tuple[Steps, dict[str, Any]]:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
    )

    from compass_jax.resolve import resolve_model

    model = SentenceTransformer(str(resolve_model(MODEL)), device="cpu", local_files_only=True)
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    loss_fn = CachedMultipleNegativesRankingLoss(
        model, scale=args.scale, mini_batch_size=args.chunk
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)

    def features(batch):
        out = []
        for name in TOWERS:
            # Unpacked towers: one text per row (negatives example-major), as our padded step.
            ids, mask, _ = (torch.from_numpy(x.astype(np.int64)) for x in batch.tower(name))
            out.append(
                {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
            )
        return out

    def step(feats) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(feats, None)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return float(loss.detach())

    def stepper(batches):
        feats = [features(b) for b in batches]
        return lambda i: step(feats[i])

    return {name: stepper(batches) for name, batches in batch_sets.items()}, {
        "torch_threads": torch.get_num_threads(),
        "attn_implementation": getattr(model[0].auto_model.config, "_attn_implementation", None),
    }


def matmul_rates(rows: int, d: int, f: int, repeats: int = 5) -> dict[str, Any]:
    """GFLOP/s of the encoder's largest matmul shape, `[rows, d] @ [d, f]` with `rows` = tokens
    in one chunk, and of its two backward products, in each runtime: what the step can at best
    reach on this CPU, measured in the same run."""
    import jax
    import jax.numpy as jnp
    import torch

    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, d), np.float32)
    w = rng.standard_normal((d, f), np.float32)
    g = rng.standard_normal((rows, f), np.float32)
    flop = 2 * rows * d * f

    def best(fn, *a) -> float:
        fn(*a)
        times = []
        for _ in range(repeats):
            with m.Timer() as t:
                fn(*a)
            times.append(t.wall)
        return round(flop / min(times) / 1e9, 1)

    sync = jax.block_until_ready
    jx, jw, jg = jnp.asarray(x), jnp.asarray(w), jnp.asarray(g)
    bf = lambda a: a.astype(jnp.bfloat16)
    f32 = jnp.float32
    fwd = jax.jit(lambda a, b: a @ b)
    dx = jax.jit(lambda c, b: c @ b.T)
    dw = jax.jit(lambda a, c: a.T @ c)
    mixed = jax.jit(lambda a, b: jnp.dot(bf(a), bf(b), preferred_element_type=f32))
    tx, tw, tg = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(g)
    with torch.inference_mode():
        return {
            "shape": [rows, d, f],
            "jax_float32": {
                "forward": best(lambda *a: sync(fwd(*a)), jx, jw),
                "grad_input": best(lambda *a: sync(dx(*a)), jg, jw),
                "grad_weight": best(lambda *a: sync(dw(*a)), jx, jg),
            },
            "jax_bfloat16_f32_accumulate": {"forward": best(lambda *a: sync(mixed(*a)), jx, jw)},
            "torch_float32": {
                "forward": best(torch.matmul, tx, tw),
                "grad_input": best(lambda c, b: c @ b.T, tg, tw),
                "grad_weight": best(lambda a, c: a.T @ c, tx, tg),
            },
        }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=128, help="global batch (triples)")
    p.add_argument("--chunk", type=int, default=32, help="mini-batch / GradCache chunk")
    p.add_argument("--seq", type=int, default=32)
    p.add_argument("--scale", type=float, default=20.0, help="1 / temperature")
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--threads", type=int, default=None, help="default: all schedulable CPUs")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=3, help="timed rounds")
    p.add_argument("--no-bf16", dest="bf16", action="store_false")
    p.add_argument(
        "--no-natural", dest="natural", action="store_false", help="skip the natural-length rows"
    )
    m.add_quiet_arguments(p)
    return p.parse_args(argv)


def pin_threads(threads: int | None) -> int:
    """Both runtimes get the same CPUs: XLA sizes its pool from the schedulable CPUs, torch is
    told the same number."""
    cpus = sorted(os.sched_getaffinity(0))
    if threads and threads < len(cpus):
        os.sched_setaffinity(0, cpus[:threads])
    n = len(os.sched_getaffinity(0))
    import torch

    torch.set_num_threads(n)
    return n


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    threads = pin_threads(args.threads)  # before JAX starts its thread pool
    quiet = m.wait_for_quiet(args.max_load, args.max_wait_s, log)
    machine = m.machine_info()
    from compass_jax.gradcache import row_unit
    from compass_jax.interop.tokenizer import load_tokenizer
    from compass_jax.resolve import resolve_model

    rounds = args.warmup + args.steps
    batch_sets = {}
    with tempfile.TemporaryDirectory(prefix="train_vs_st_") as tmp:
        tokenizer = load_tokenizer(resolve_model(MODEL))
        for name, min_words in (("full", args.seq + 8), ("natural", 0)):
            if name == "natural" and not args.natural:
                continue
            data = tr.make_pairs(os.path.join(tmp, f"{name}.jsonl"), n=4096, min_words=min_words)
            kw = dict(batch_size=args.batch, count=rounds, seq=args.seq, task="retrieval")
            batch_sets[name] = tr.tokenized_batches(data, tokenizer, **kw)
            # What the trainer runs (`TrainConfig.pack`): texts packed into rows of --seq.
            batch_sets[f"{name}_packed"] = tr.tokenized_batches(
                data, tokenizer, **kw, pack=True, row_multiple=row_unit(args.chunk, 1)
            )
    shares = {
        name: tr.token_shares(batch_sets[name][0], args.chunk, batch_sets[f"{name}_packed"][0])
        for name in ("full", "natural")
        if name in batch_sets
    }
    log(f"token shares: {shares}")
    contenders, info = {}, {}
    ours32, info["ours_float32"] = ours(
        args, {n: b for n, b in batch_sets.items() if n != "full_packed"}, "float32"
    )
    contenders["ours_float32"] = ours32["full"]
    if args.bf16:
        ours16, info["ours_bfloat16"] = ours(args, {"full": batch_sets["full"]}, "bfloat16")
        contenders["ours_bfloat16"] = ours16["full"]
    unpacked = {n: b for n, b in batch_sets.items() if not n.endswith("_packed")}
    theirs, info["sentence_transformers_float32"] = peer(args, unpacked)
    contenders["sentence_transformers_float32"] = theirs["full"]
    if args.natural:
        contenders["ours_float32_natural"] = ours32["natural"]
        contenders["ours_float32_natural_packed"] = ours32["natural_packed"]
        contenders["sentence_transformers_float32_natural"] = theirs["natural"]
    log("matmul rates ...")
    model_cfg = tr.load(MODEL)[0]
    rates = matmul_rates(args.chunk * args.seq, model_cfg.hidden_size, model_cfg.intermediate_size)
    # Round 0 runs the contenders in this order, so each side's first `full` step starts from the
    # pretrained weights and the two first-step losses are comparable.
    names = list(contenders)
    times: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    first_loss: dict[str, float] = {}
    start = m.cpu_snapshot()
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            if r >= args.warmup:  # untimed: the timed step runs after its own program
                contenders[name](r)
            with m.Timer() as t:
                loss = contenders[name](r)
            first_loss.setdefault(name, loss)
            if r >= args.warmup:
                times[name].append(t.wall)
                cpu[name].append(t.cpu)
            log(
                f"round {r + 1}/{rounds} {name}: {t.wall:.2f} s wall, {t.cpu:.2f} s CPU "
                f"(loss {loss:.5f})"
            )
    contention = m.contention_since(start)
    # The same algorithm on both sides: two forward passes and one backward pass per example,
    # counted on the padded grid; "computed" scales it by the share of the grid each side embeds.
    flops = info["ours_float32"].pop("flops")
    info.get("ours_bfloat16", {}).pop("flops", None)
    rows = {}
    for name in names:
        med = float(np.median(times[name]))
        data = "natural" if "_natural" in name else "full"
        # Tokens computed over the padded grid's: shares are real / computed tokens.
        layout = "packed" if name.endswith("_packed") else "padded"
        layout = "trimmed_mini_batch" if name.startswith("sentence") else layout
        share = shares[data]["padded"] / shares[data][layout]
        rows[name] = {
            "data": data,
            **m.summarize(times[name]),
            "examples_per_s": round(args.batch / med, 2),
            "first_step_loss": round(first_loss[name], 6),
            "cpu_s": [round(c, 2) for c in cpu[name]],
            "grid_gflop_per_s": round(flops["hardware_flops"] / med / 1e9, 1),
            "computed_gflop_per_s": round(share * flops["hardware_flops"] / med / 1e9, 1),
            **info[name.removesuffix("_packed").removesuffix("_natural")],
        }

    def speedup(n: str, peer_name: str) -> dict[str, float]:
        """Peer time / our time four ways: medians of wall times (the headline), the median of
        per-round ratios, fastest rounds, medians of CPU seconds."""
        a, b = times[peer_name], times[n]
        return {
            "median_wall": round(float(np.median(a) / np.median(b)), 3),
            "paired_wall": m.paired_ratio(a, b),
            "min_wall": round(min(a) / min(b), 3),
            "median_cpu": round(float(np.median(cpu[peer_name]) / np.median(cpu[n])), 3),
        }

    st = "sentence_transformers_float32"
    ratios: dict[str, Any] = {
        f"{n}_over_sentence_transformers": speedup(n, st)
        for n in ("ours_float32", "ours_bfloat16")
        if n in names
    }
    if args.natural:
        ratios["ours_float32_over_sentence_transformers_natural"] = speedup(
            "ours_float32_natural_packed", f"{st}_natural"
        )
        ratios["ours_float32_padded_over_sentence_transformers_natural"] = speedup(
            "ours_float32_natural", f"{st}_natural"
        )
    ratios["target"] = ">= 1.5 on full, >= 1.2 on natural (ours_float32, examples/s)"
    first = {
        n: rows[n]["first_step_loss"] for n in ("ours_float32", "ours_bfloat16", st) if n in rows
    }
    report = {
        "benchmark": "train_vs_sentence_transformers",
        "what": "examples/s of a GradCache training step, compass-jax vs sentence-transformers",
        "settings": {
            "model": MODEL,
            "batch": args.batch,
            "mini_batch": args.chunk,
            "seq": args.seq,
            "hard_negatives": 1,
            "scale": args.scale,
            "loss": "InfoNCE, no CAM masks",
            "optimizer": f"AdamW lr {args.lr} wd 0.01, clip 1.0",
            "threads": threads,
            "dropout": "off on both sides",
            "warmup_rounds": args.warmup,
            "timed_rounds": args.steps,
            "data": "retrieval triples, same token ids both sides",
            "token_shares": shares,
        },
        "machine": machine,
        "quiet_wait": quiet,
        "contention": contention,
        "flops_per_step": flops,
        "matmul_gflop_per_s": rates,
        "contenders": rows,
        "ratios": ratios,
        "first_step_loss": {
            **first,
            "abs_diff_ours_float32_vs_peer": round(abs(first["ours_float32"] - first[st]), 6),
        },
    }
    m.emit(report, args.out)
    return report


if __name__ == "__main__":
    main()

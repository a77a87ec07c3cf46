"""Embedding throughput: compass-jax's `Encoder.encode` vs PyTorch on this CPU, same run.

For each model and precision it times whole passes over the same texts (tokenisation included on
every side) of

* compass-jax, `Encoder.encode` with each batch layout (`compass_jax.data.packing.Layout`):
  `packed` (the default: several texts per row, rows of 64/128/... tokens, a token budget per
  batch), `token_budget` (one text per row, lengths in multiples of 16, rows = budget / length),
  `fine_buckets` (one text per row, multiples of 8, 32 rows) and `pow2_buckets` (one text per
  row, powers of two from 16, 32 rows: the layout before packing);
* PyTorch `transformers` `AutoModel` under `torch.inference_mode()`, texts sorted by length in
  batches of `--batch-size`, each padded to its own longest row (dynamic padding), mean pooling
  + L2 normalisation; in bfloat16 both `model.to(torch.bfloat16)` and `torch.autocast`;
* sentence-transformers `SentenceTransformer.encode` (float32), which does the same its own way.

Rounds run every contender once, back to back in a rotating order, so background load hits all
alike; each reports its best and median pass, CPU seconds, padding efficiency (real tokens over
computed tokens), GFLOP/s of the forward matmuls it computed against matmul peaks measured in the
same run, and useful GFLOP/s (each text's own tokens: the same work for every side). Ratios are
ours (packed) over each peer: best over best, and the median of per-round ratios. A torch bf16
variant far slower than ours (CPUs without bf16 dot instructions run it 5-30x slower) is timed on
its warm-up pass only. `contention` says how much CPU other processes took: trust a figure only
when it is near 0.

Run (about 10 minutes on 2 idle cores; progress on stderr, JSON on stdout):

    python benchmarks/embed_throughput.py --out /tmp/embed_throughput.json
    python benchmarks/embed_throughput.py --models all-MiniLM-L6-v2 --dtypes float32 --n 256
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import _machine as m
import numpy as np
from _texts import make_texts

DEFAULT_MODELS = ("all-MiniLM-L6-v2", "multilingual-e5-small")
LAYOUTS = ("packed", "token_budget", "fine_buckets", "pow2_buckets")
PEAK_SIZE = 2048
# dtype -> the (compass-jax, torch) matmul peaks its FLOP/s are compared with
PEAKS_FOR = {
    "float32": ("jax_float32", "torch_float32"),
    "bfloat16": ("jax_bfloat16_f32acc", "torch_bfloat16"),
}
log = m.logger("embed_throughput")

# ---------------------------------------------------------------------------------------------
# Matmul peaks
# ---------------------------------------------------------------------------------------------


def jax_matmul_peak(dtype: str, repeats: int, upcast: bool = False) -> float:
    """GFLOP/s of a jitted 2048^2 jnp.dot (bf16 inputs accumulate to f32)."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    a, b = (jnp.asarray(rng.standard_normal((PEAK_SIZE,) * 2), dtype) for _ in range(2))
    if upcast:  # bf16 storage, f32 compute: what a CPU without bf16 dot units does best
        dot = jax.jit(lambda x, y: jnp.dot(x.astype(jnp.float32), y.astype(jnp.float32)))
    else:
        dot = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
    dot(a, b).block_until_ready()
    times = m.wall_times(lambda: dot(a, b).block_until_ready(), repeats)
    return m.gflops(2 * PEAK_SIZE**3, min(times))


def torch_matmul_peak(dtype: str, repeats: int) -> float:
    """GFLOP/s of a 2048^2 `a @ b.T` in torch, the layout `nn.Linear` runs."""
    import torch

    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(PEAK_SIZE, PEAK_SIZE, generator=gen) for _ in "ab")
    a, b = a.to(getattr(torch, dtype)), b.to(getattr(torch, dtype))
    with torch.inference_mode():
        a @ b.T
        times = m.wall_times(lambda: a @ b.T, repeats)
    return m.gflops(2 * PEAK_SIZE**3, min(times))


def measure_peaks(repeats: int = 10) -> dict[str, Any]:
    """Matmul GFLOP/s, best of `repeats` (4 for torch bf16, slow on CPUs without bf16 units)."""
    log("measuring matmul peaks")
    start = m.cpu_snapshot()
    peaks = {
        "jax_float32": jax_matmul_peak("float32", repeats),
        "jax_bfloat16_f32acc": jax_matmul_peak("bfloat16", repeats),
        "jax_bfloat16_upcast_to_f32": jax_matmul_peak("bfloat16", repeats, upcast=True),
        "torch_float32": torch_matmul_peak("float32", repeats),
        "torch_bfloat16": torch_matmul_peak("bfloat16", 4),
    }
    return {**peaks, "contention": m.contention_since(start)}


def best_peaks(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The best of several peak measurements (at the start and the end of the run), and whether
    the measured bf16/fp32 speed-up agrees with the default compute dtype's rule."""
    from compass_jax.machine import compute_dtype_decision

    names = [k for k in runs[0] if k != "contention"]
    best = {k: max(run[k] for run in runs) for k in names}
    faster = "bfloat16" if best["jax_bfloat16_f32acc"] > best["jax_float32"] else "float32"
    return {
        "size": PEAK_SIZE,
        **best,
        "runs": runs,
        "dtype_rule": {**compute_dtype_decision(), "measured_faster_matmul": faster},
        "notes": (
            "GFLOP/s, best of the runs; jax: jnp.dot, bf16 with preferred_element_type=float32; "
            "upcast: bf16 inputs converted to f32 inside the jit; torch: a @ b.T"
        ),
    }


# ---------------------------------------------------------------------------------------------
# FLOPs and padding
# ---------------------------------------------------------------------------------------------


def matmul_params_per_layer(cfg) -> int:
    """Weights that take part in matmuls in one encoder layer (q, k, v, o and the MLP)."""
    d, inner = cfg.hidden_size, cfg.num_heads * cfg.head_dim
    kv = cfg.num_kv_heads * cfg.head_dim
    mlp_mats = 3 if cfg.is_decoder else 2
    return d * inner + 2 * d * kv + inner * d + mlp_mats * d * cfg.intermediate_size


def forward_flops(cfg, shapes: Sequence[tuple[int, int]]) -> float:
    """Forward matmul FLOPs of rows `(count, length)`: per token and layer, 2 x matmul params
    plus 4 x length x heads x head_dim (scores and weighted values over its row)."""
    per_layer = matmul_params_per_layer(cfg)
    inner = cfg.num_heads * cfg.head_dim
    total = sum(r * n * (2 * per_layer + 4 * n * inner) for r, n in shapes)
    return float(total * cfg.num_layers)


def padding(cfg, shapes: Sequence[tuple[int, int]], lengths: Sequence[int]) -> dict[str, Any]:
    """Padding efficiency and GFLOP of a side that computes `shapes` for texts of `lengths`
    tokens; `useful_gflop` counts each text alone at its own length (the same for all sides)."""
    computed = int(sum(r * n for r, n in shapes))
    return {
        "computed_tokens": computed,
        "padding_efficiency": round(sum(lengths) / computed, 4),
        "distinct_shapes": len(set(shapes)),
        "gflop": round(forward_flops(cfg, shapes) / 1e9, 2),
        "useful_gflop": round(forward_flops(cfg, [(1, n) for n in lengths]) / 1e9, 2),
    }


def layouts(max_length: int, batch_size: int) -> dict[str, Any]:
    from compass_jax.data.bucketing import length_buckets
    from compass_jax.data.packing import Layout
    from compass_jax.encoder import ROW_TOKENS

    def multiples(step: int) -> tuple[int, ...]:
        step = max(step, -(-max_length // 16 // 8) * 8)  # at most 16 lengths
        return (*range(step, max_length, step), max_length)

    budget = batch_size * ROW_TOKENS
    return {
        "packed": Layout.for_max_length(max_length, smallest=ROW_TOKENS, tokens=budget),
        "token_budget": Layout(multiples(16), tokens=budget, pack=False),
        "fine_buckets": Layout(multiples(8), rows=batch_size, pack=False),
        "pow2_buckets": Layout(length_buckets(max_length), rows=batch_size, pack=False),
    }


# ---------------------------------------------------------------------------------------------
# Contenders: one call embeds every text; timed in rounds
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Contender:
    name: str
    run: Callable[[], np.ndarray]  # every text -> [n, d] unit vectors in input order
    info: dict[str, Any]
    wall: list[float] = dataclasses.field(default_factory=list)
    cpu: list[float] = dataclasses.field(default_factory=list)
    vectors: np.ndarray | None = None
    warmup_s: float = 0.0
    timed: bool = True

    def warm_up(self, passes: int = 1) -> None:
        start = time.perf_counter()
        for _ in range(passes):
            self.vectors = self.run()
        self.warmup_s = time.perf_counter() - start

    def time_pass(self) -> None:
        with m.Timer() as t:
            self.run()
        self.wall.append(t.wall)
        self.cpu.append(t.cpu)

    def report(self, n: int) -> dict[str, Any]:
        wall = self.wall or [self.warmup_s]
        best = min(wall)
        out = {
            **self.info,
            "texts_per_s": round(n / best, 2),
            "best_s": round(best, 3),
            "median_s": round(statistics.median(wall), 3),
            "cpu_s_median": round(statistics.median(self.cpu), 3) if self.cpu else None,
            "pass_s": [round(t, 3) for t in wall],
            "warmup_s": round(self.warmup_s, 2),
            "gflop_per_s": m.gflops(self.info["gflop"] * 1e9, best),
            "useful_gflop_per_s": m.gflops(self.info["useful_gflop"] * 1e9, best),
        }
        if not self.timed:
            out["note"] = "far slower than ours: its warm-up pass is the only timing"
        return out


def ours(enc, texts, token_ids, lengths, args) -> list[Contender]:
    from compass_jax.data.packing import pack

    out = []
    for name in args.layouts.split(","):
        layout = layouts(args.max_length, args.batch_size)[name]
        batches = list(pack(token_ids, layout, pad_id=pad_id_of(enc)))
        shapes = [b.token_ids.shape for b in batches]
        info = {"layout": dataclasses.asdict(layout), **padding(enc.cfg, shapes, lengths)}
        run = lambda layout=layout: enc.encode(texts, max_length=args.max_length, layout=layout)
        out.append(Contender(f"compass_jax_{name}", run, info))
    return out


def pad_id_of(enc) -> int:
    pad = enc.tokenizer.pad_token_id
    return pad if pad is not None else (enc.cfg.pad_token_id or 0)


def torch_variants(dtype: str) -> tuple[str, ...]:
    if dtype == "float32":
        return ("torch_fp32", "sentence_transformers_fp32")
    return ("torch_bf16_weights", "torch_autocast_bf16")


def torch_peer(variant: str, enc, texts, lengths, args) -> Contender:
    """transformers on length-sorted batches with dynamic padding, or sentence-transformers."""
    import torch

    if variant.startswith("sentence_transformers"):
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(enc.path, device="cpu", local_files_only=True)
        model.max_seq_length = args.max_length
        # It sorts by characters, not tokens; its batches are what it pads.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        shapes = _dynamic_shapes([lengths[i] for i in order], args.batch_size)
        run = lambda: model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True)
        return Contender(variant, run, padding(enc.cfg, shapes, lengths))
    from transformers import AutoModel

    # The BERT pooler is unused by mean pooling (and absent from imported checkpoints).
    model = AutoModel.from_pretrained(enc.path, add_pooling_layer=False).eval()
    if variant == "torch_bf16_weights":
        model = model.to(torch.bfloat16)
    autocast = variant == "torch_autocast_bf16"
    order = np.argsort([-n for n in lengths], kind="stable")
    batches = [order[i : i + args.batch_size] for i in range(0, len(order), args.batch_size)]
    shapes = _dynamic_shapes([lengths[i] for i in order], args.batch_size)
    run = lambda: torch_encode(model, enc, texts, batches, args.max_length, autocast)
    info = {"attn_implementation": model.config._attn_implementation}
    return Contender(variant, run, {**info, **padding(enc.cfg, shapes, lengths)})


def _dynamic_shapes(sorted_lengths: Sequence[int], batch_size: int) -> list[tuple[int, int]]:
    return [
        (len(chunk), max(chunk))
        for chunk in (
            sorted_lengths[i : i + batch_size] for i in range(0, len(sorted_lengths), batch_size)
        )
    ]


def torch_encode(model, enc, texts, batches, max_length: int, autocast: bool) -> np.ndarray:
    """The PyTorch peer of `Encoder.encode`: the same `enc.tokenize` call per batch, padding to
    the batch's longest row, mean pooling + L2 normalisation as sentence-transformers does."""
    import torch

    out = np.zeros((len(texts), enc.dim), np.float32)
    cast = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    for rows in batches:
        token_ids, _ = enc.tokenize([texts[r] for r in rows], max_length=max_length)
        longest = max(map(len, token_ids))
        ids = np.full((len(rows), longest), pad_id_of(enc), np.int64)
        mask = np.zeros((len(rows), longest), np.int64)
        for i, seq in enumerate(token_ids):
            ids[i, : len(seq)], mask[i, : len(seq)] = seq, 1
        ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
        with torch.inference_mode(), cast:
            hidden = model(input_ids=ids_t, attention_mask=mask_t).last_hidden_state
            weights = mask_t.unsqueeze(-1).to(torch.float32)
            pooled = (hidden.float() * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            out[rows] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    return out


# ---------------------------------------------------------------------------------------------
# One (model, dtype) comparison
# ---------------------------------------------------------------------------------------------


def cosine(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"mean": round(float(cos.mean()), 6), "min": round(float(cos.min()), 6)}


def compare(name: str, dtype: str, texts, args, reference) -> dict[str, Any]:
    """Load `name` in `dtype`, time every contender, report; `reference` keeps each model's
    torch float32 vectors for the bf16 agreement check."""
    from compass_jax.encoder import Encoder

    log(f"{name} {dtype}: loading")
    start = m.cpu_snapshot()
    try:
        enc = Encoder.load(name, dtype=dtype)
    except Exception as e:
        return {"status": "skipped", "error": f"{type(e).__name__}: {e}"}
    token_ids, _ = enc.tokenize(texts, max_length=args.max_length)
    lengths = [len(t) for t in token_ids]
    mine = ours(enc, texts, token_ids, lengths, args)
    for c in mine:
        log(f"{c.name}: warm-up (compiles {c.info['distinct_shapes']} shapes)")
        c.warm_up(passes=2)
    clean = min(m.wall_times(mine[0].run, 1))
    peers = []
    for variant in torch_variants(dtype):
        log(f"{variant}: warm-up")
        peer = torch_peer(variant, enc, texts, lengths, args)
        peer.warm_up()
        peer.timed = peer.warmup_s < max(args.slow_factor * clean, args.slow_pass_s)
        peers.append(peer)
    timed = [c for c in mine + peers if c.timed]
    for round_ in range(args.repeats):
        log(f"timed round {round_ + 1}/{args.repeats}")
        shift = round_ % len(timed)
        for c in timed[shift:] + timed[:shift]:
            c.time_pass()
    n = len(texts)
    result = {
        "status": "ok",
        "arch": enc.cfg.arch,
        "layers": enc.cfg.num_layers,
        "hidden": enc.cfg.hidden_size,
        "compass_jax": {c.name: c.report(n) for c in mine},
        "torch": {c.name: c.report(n) for c in peers},
        "tokenize_all_s": round(min(m.wall_times(lambda: enc.tokenize(texts), 3)), 3),
    }
    packed = mine[0]
    result["ratio_ours_over_peer"] = {
        c.name: {
            "best": round(min(c.wall or [c.warmup_s]) / min(packed.wall), 3),
            "paired_median": m.paired_ratio(c.wall, packed.wall) if c.timed else None,
            "cpu_s": round(statistics.median(c.cpu) / statistics.median(packed.cpu), 3)
            if c.timed
            else None,
        }
        for c in peers
    }
    fastest = min(peers, key=lambda c: min(c.wall or [c.warmup_s]))
    result["fastest_peer"] = fastest.name
    result["ratio_over_fastest_peer"] = result["ratio_ours_over_peer"][fastest.name]
    if dtype == "float32":
        reference[name] = peers[0].vectors
    result["agreement_cosine"] = {
        **{f"vs_{c.name}": cosine(packed.vectors, c.vectors) for c in peers},
        **({"vs_torch_fp32": cosine(packed.vectors, reference[name])} if name in reference else {}),
        "layouts_max_abs_diff": {
            c.name: float(np.abs(c.vectors - packed.vectors).max()) for c in mine[1:]
        },
    }
    result["contention"] = m.contention_since(start)
    return result


def add_peak_fractions(results: dict[str, Any], peaks: dict[str, Any]) -> None:
    """`pct_of_peak`: each side's GFLOP/s over its framework's matmul peak for the dtype; and
    `ratio_ceiling_at_peak`: the ratio over the fastest peer that ours would reach if it ran
    only the useful FLOPs (each text alone at its own length) at that peak, with nothing else
    taking any time: what no layout or kernel of ours can beat on this machine."""
    for by_dtype in results.values():
        for dtype, result in by_dtype.items():
            if result["status"] != "ok":
                continue
            for side, peak in zip(("compass_jax", "torch"), PEAKS_FOR[dtype], strict=True):
                for report in result[side].values():
                    report["pct_of_peak"] = round(100 * report["gflop_per_s"] / peaks[peak], 1)
                    report["peak_used"] = peak
            ours = next(iter(result["compass_jax"].values()))
            fastest = result["torch"][result["fastest_peer"]]
            floor_s = ours["useful_gflop"] / peaks[ours["peak_used"]]
            result["ratio_ceiling_at_peak"] = round(fastest["best_s"] / floor_s, 3)


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=512, help="number of texts")
    p.add_argument(
        "--batch-size",
        type=int,
        default=32,
        help="texts per torch batch; ours: batch_size x 64 tokens per batch (Encoder.encode)",
    )
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--threads", type=int, default=None, help="default: every schedulable CPU")
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated")
    p.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated")
    p.add_argument("--layouts", default=",".join(LAYOUTS), help="ours; the first is compared")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic texts")
    p.add_argument(
        "--slow-factor",
        type=float,
        default=3.0,
        help="a torch variant whose warm-up pass is this many times ours (and over "
        "--slow-pass-s) is timed on that pass only",
    )
    p.add_argument("--slow-pass-s", type=float, default=20.0)
    m.add_quiet_arguments(p)
    return p.parse_args(argv)


def settings(args: argparse.Namespace, texts: Sequence[str]) -> dict[str, Any]:
    return {
        **{k: v for k, v in vars(args).items() if k not in ("out", "models", "dtypes")},
        "n_texts": len(texts),
        "ours_batches": (
            f"packed: a token budget of batch_size x 64 = {args.batch_size * 64} tokens per "
            "batch; see `layout` in each result"
        ),
        "torch_batches": "texts sorted by token length, batch_size per batch, dynamic padding",
        "flops": (
            "forward matmul FLOPs of the encoder layers on the shapes each side computed (per "
            "token and layer 2 x matmul params + 4 x row length x heads x head_dim); "
            "useful_gflop: each text alone at its own length"
        ),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    threads_note = m.pin_threads(args.threads)  # before JAX and torch start their pools
    quiet = m.wait_for_quiet(args.max_load, args.max_wait_s, log)
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    start = m.cpu_snapshot()
    texts = make_texts(args.n, args.seed)
    machine = {**m.machine_info(), "thread_alignment": threads_note, "quiet_wait": quiet}
    first = measure_peaks()
    results, reference = {}, {}
    for name, dtype in itertools.product(args.models.split(","), args.dtypes.split(",")):
        results.setdefault(name, {})[dtype] = compare(name, dtype, texts, args, reference)
    peaks = best_peaks([first, measure_peaks()])
    add_peak_fractions(results, peaks)
    machine["contention_whole_run"] = m.contention_since(start)
    report = {
        "machine": machine,
        "settings": settings(args, texts),
        "peak_gflop_per_s": peaks,
        "results": results,
    }
    m.emit(report, args.out)
    return report


if __name__ == "__main__":
    main()

"""`compass-jax export`: a model (HF directory, bundled name, hub id, training workdir or
`workdir@step`) -> a Hugging Face + sentence-transformers directory in bf16 or fp32, optionally
with FP8 block linears (compressed-tensors `float-quantized`, served by vLLM as is) and an FP8
quality report (`compass_jax.workflows.export`).

The directory is written under a temporary name and renamed into place, so a failed export
(including a failed FP8 quality gate) leaves nothing at `--out`.
"""

from __future__ import annotations

import argparse
import os
import time

from compass_jax import jsonio
from compass_jax.interop.export_plan import DTYPES
from compass_jax.resolve import DEFAULT_MODEL
from compass_jax.workflows.export import export_model

HELP = "export a model as a HF + sentence-transformers directory (bf16 | fp32 | FP8 for vLLM)"


def _dims(text: str) -> list[int]:
    try:
        return [int(d) for d in text.split(",") if d.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 64,128, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help="HF dir, name, workdir or workdir@step")
    p.add_argument("--out", required=True, help="output directory (must not exist)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="weight dtype")
    p.add_argument("--fp8", action="store_true", help="FP8 block linears (compressed-tensors)")
    p.add_argument("--max-shard-size", default="5GB", help="e.g. 5GB, 500MiB")
    p.add_argument("--min-cosine", type=float, default=0.99, help="FP8 quality gate")
    p.add_argument("--no-quality-gate", action="store_true", help="write FP8 whatever its quality")
    p.add_argument("--calibration", default=None, help="JSONL (lang, query, title) for FP8")
    p.add_argument("--matryoshka-dims", type=_dims, default=None, help="e.g. 64,128,256")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def run(args: argparse.Namespace) -> dict:
    records = None
    if args.calibration:
        from compass_jax.fp8_quality import load_calibration

        records = load_calibration(args.calibration)
    start = time.perf_counter()
    out = export_model(
        args.model,
        args.out,
        dtype=args.dtype,
        fp8=args.fp8,
        max_shard_size=args.max_shard_size,
        matryoshka_dims=args.matryoshka_dims,
        min_cosine=None if args.no_quality_gate else args.min_cosine,
        calibration=records,
        overwrite=args.overwrite,
    )
    summary = {
        "out": str(out),
        "model": str(args.model),
        "dtype": DTYPES[args.dtype],
        "fp8": args.fp8,
        "bytes": sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs),
        "seconds": round(time.perf_counter() - start, 2),
    }
    if args.fp8:
        cosine = jsonio.read_json(os.path.join(out, "fp8_report.json"))["cosine"]
        summary["fp8_mean_cosine"] = {
            lang: round(s["mean"], 5) for lang, s in cosine["per_language"].items()
        }
    print(jsonio.dumps(summary))
    return summary

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
from typing import Annotated

from compass_jax import jsonio
from compass_jax.commands import flags
from compass_jax.configio import Count, Range
from compass_jax.interop.export_plan import parse_size
from compass_jax.workflows.export import export_model

HELP = "export a model as a HF + sentence-transformers directory (bf16 | fp32 | FP8 for vLLM)"
Cosine = Annotated[float, Range(ge=-1, le=1)]


def _size(text: str) -> str:
    try:
        parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("max_shard_size: ")) from None
    return text


def add_arguments(p: argparse.ArgumentParser) -> None:
    flags.add_model(p)
    flags.add_output(p, kind="dir", help="output directory")
    flags.add_dtype(p, default="bf16", help="weight dtype (bf16 with --fp8)")
    p.add_argument("--fp8", action="store_true", help="FP8 block linears (compressed-tensors)")
    p.add_argument("--max-shard-size", type=_size, default="5GB", help="e.g. 5GB, 500MiB")
    p.add_argument(
        "--min-cosine",
        type=flags.number(Cosine),
        default=0.99,
        help="FP8 quality gate: lowest mean cosine to bf16 per language",
    )
    p.add_argument("--no-quality-gate", action="store_true", help="write FP8 whatever its quality")
    p.add_argument(
        "--calibration",
        default=None,
        help="FP8 calibration JSONL: lang, query, title (default: bundled sample)",
    )
    p.add_argument(
        "--matryoshka-dims",
        type=flags.number(tuple[Count, ...]),
        default=None,
        help="declared output widths, e.g. 64,128,256",
    )
    flags.add_quiet(p)


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
        progress=not args.quiet,
    )
    info = jsonio.read_json(os.path.join(out, "export_info.json"))
    summary = {
        "out": str(out),
        "model": info["source"],
        "dtype": info["dtype"],
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

"""`compass-jax embed`: texts from a file -> L2-normalised float32 `.npy`, rows in input order."""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from compass_jax.atomic import atomic_path
from compass_jax.encoder import Encoder
from compass_jax.resolve import DEFAULT_MODEL
from compass_jax.textio import read_texts

HELP = "embed texts from a .txt or .jsonl file into a .npy matrix"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help="HF directory or bundled model name")
    p.add_argument("--input", required=True, help=".txt (one text per line) or .jsonl ('text')")
    p.add_argument("--output", required=True, help="output .npy (float32, one row per text)")
    p.add_argument("--prompt", default=None, help="prompt name: query | document | <model's>")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=None, help="token limit (model's default)")
    p.add_argument("--dim", type=int, default=None, help="Matryoshka dimension (default: full)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")


def run(args: argparse.Namespace) -> dict:
    if not args.output.endswith(".npy"):
        raise ValueError(f"--output {args.output}: must end in .npy")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    texts = read_texts(args.input)
    encoder = Encoder.load(args.model, dtype=args.dtype)
    start = time.perf_counter()
    vectors = encoder.encode(
        texts,
        prompt=args.prompt,
        batch_size=args.batch_size,
        max_length=args.max_length,
        dim=args.dim,
        progress=True,
    )
    seconds = time.perf_counter() - start
    with atomic_path(args.output) as tmp, open(tmp, "wb") as f:
        np.save(f, vectors)
    summary = {
        "output": args.output,
        "model": encoder.path,
        "texts": len(texts),
        "dim": int(vectors.shape[1]),
        "seconds": round(seconds, 3),
        "texts_per_second": round(len(texts) / seconds, 1),
    }
    print(json.dumps(summary))
    return summary

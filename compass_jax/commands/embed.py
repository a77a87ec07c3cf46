"""`compass-jax embed`: texts from a file -> L2-normalised float32 `.npy`, rows in input order
(`compass_jax.workflows.embed`)."""

from __future__ import annotations

import argparse

from compass_jax import jsonio
from compass_jax.resolve import DEFAULT_MODEL
from compass_jax.workflows.embed import embed_file

HELP = "embed texts from a .txt or .jsonl file into a .npy matrix"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help="HF dir, name, workdir or workdir@step")
    p.add_argument("--input", required=True, help=".txt (one text per line) or .jsonl ('text')")
    p.add_argument("--output", required=True, help="output .npy (float32, one row per text)")
    p.add_argument("--prompt", default=None, help="prompt name: query | document | <model's>")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=None, help="token limit (model's default)")
    p.add_argument("--dim", type=int, default=None, help="Matryoshka dimension (default: full)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")


def run(args: argparse.Namespace) -> dict:
    summary = embed_file(
        args.model,
        args.input,
        args.output,
        prompt=args.prompt,
        batch_size=args.batch_size,
        max_length=args.max_length,
        dim=args.dim,
        dtype=args.dtype,
    )
    print(jsonio.dumps(summary))
    return summary

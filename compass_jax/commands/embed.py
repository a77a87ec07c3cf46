"""`compass-jax embed`: texts from a file -> L2-normalised float32 `.npy`, rows in input order
(`compass_jax.workflows.embed`)."""

from __future__ import annotations

import argparse

from compass_jax import jsonio
from compass_jax.commands import flags
from compass_jax.workflows.embed import embed_file

HELP = "embed texts from a .txt or .jsonl file into a .npy matrix"


def add_arguments(p: argparse.ArgumentParser) -> None:
    flags.add_model(p)
    p.add_argument("--input", required=True, help=".txt (one text per line) or .jsonl ('text')")
    flags.add_output(
        p,
        "--out",
        "--output",
        kind="file",
        suffix=".npy",
        help="output .npy (float32, one row per text)",
    )
    p.add_argument("--prompt", default=None, help="prompt name: query | document | <model's>")
    p.add_argument("--batch-size", type=flags.count, default=32, help="texts per batch")
    p.add_argument(
        "--max-length",
        type=flags.count,
        default=None,
        help="token limit (default: the model's)",
    )
    p.add_argument(
        "--dim",
        type=flags.count,
        default=None,
        help="Matryoshka dimension (default: full)",
    )
    flags.add_dtype(p)
    flags.add_quiet(p)


def run(args: argparse.Namespace) -> dict:
    summary = embed_file(
        args.model,
        args.input,
        args.out,
        prompt=args.prompt,
        batch_size=args.batch_size,
        max_length=args.max_length,
        dim=args.dim,
        dtype=args.dtype,
        progress=not args.quiet,
    )
    print(jsonio.dumps(summary))
    return summary

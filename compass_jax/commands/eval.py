"""`compass-jax eval`: a model on a suite -> per-task, per-language JSON and Markdown tables
(`compass_jax.workflows.evaluate`)."""

from __future__ import annotations

import argparse

from compass_jax.commands import flags
from compass_jax.workflows.evaluate import evaluate_model, markdown

HELP = "evaluate a model on a suite (retrieval, classification, clustering, STS, bitext)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    flags.add_model(p)
    p.add_argument("--suite", default="sample", help="built-in suite name or suite JSON file")
    flags.add_output(p, kind="dir", help="directory for results.json and results.md")
    flags.add_dtype(p)
    p.add_argument("--no-cache", action="store_true", help="do not reuse cached embeddings")
    flags.add_quiet(p)


def run(args: argparse.Namespace) -> dict:
    results = evaluate_model(
        args.model,
        args.suite,
        args.out,
        dtype=args.dtype,
        cache=not args.no_cache,
        progress=not args.quiet,
    )
    print(markdown(results))
    return results

"""`compass-jax eval`: a model on a suite -> per-task, per-language JSON and Markdown tables
(`compass_jax.workflows.evaluate`)."""

from __future__ import annotations

import argparse

from compass_jax.eval import to_markdown
from compass_jax.resolve import DEFAULT_MODEL
from compass_jax.workflows.evaluate import evaluate_model

HELP = "evaluate a model on a suite (retrieval, classification, clustering, STS, bitext)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help="HF dir, name, workdir or workdir@step")
    p.add_argument("--suite", default="sample", help="built-in suite name or suite JSON file")
    p.add_argument("--out", required=True, help="directory for results.json and results.md")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--no-cache", action="store_true", help="do not reuse cached embeddings")


def run(args: argparse.Namespace) -> dict:
    results = evaluate_model(
        args.model, args.suite, args.out, dtype=args.dtype, cache=not args.no_cache
    )
    print(to_markdown(results))
    return results

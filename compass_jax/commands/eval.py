"""`compass-jax eval`: a model on a suite -> per-task, per-language JSON and Markdown tables."""

from __future__ import annotations

import argparse
import json
import os

from compass_jax.atomic import atomic_path
from compass_jax.encoder import Encoder
from compass_jax.eval import evaluate, load_suite, to_markdown
from compass_jax.resolve import DEFAULT_MODEL, cache_dir

HELP = "evaluate a model on a suite (retrieval, classification, clustering, STS, bitext)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help="HF dir, name, workdir or checkpoint")
    p.add_argument("--suite", default="sample", help="built-in suite name or suite JSON file")
    p.add_argument("--out", required=True, help="directory for results.json and results.md")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--no-cache", action="store_true", help="do not reuse cached embeddings")


def run(args: argparse.Namespace) -> dict:
    suite = load_suite(args.suite)
    encoder = Encoder.load(args.model, dtype=args.dtype)
    cache = None if args.no_cache else str(cache_dir() / "embeddings")
    results = evaluate(encoder, suite, cache_dir=cache)
    os.makedirs(args.out, exist_ok=True)
    for name, text in (("results.json", json.dumps(results, indent=2)),
                       ("results.md", to_markdown(results))):  # fmt: skip
        with atomic_path(os.path.join(args.out, name)) as tmp, open(tmp, "w") as f:
            f.write(text)
    print(to_markdown(results))
    return results

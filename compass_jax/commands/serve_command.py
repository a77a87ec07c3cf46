"""`compass-jax serve-command DIR`: the vLLM command line and the equivalent Python that serve an
exported directory as an embedding model (`compass_jax.interop.serving` says how each flag is
chosen)."""

from __future__ import annotations

import argparse

from compass_jax import jsonio
from compass_jax.commands import flags
from compass_jax.interop.serving import invocation

HELP = "print the vLLM command and Python that serve an exported directory"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", help="an exported directory (compass-jax export)")
    p.add_argument(
        "--dim",
        type=flags.count,
        default=None,
        help="default output dimension (Matryoshka)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def run(args: argparse.Namespace) -> dict:
    result = invocation(args.model_dir, dim=args.dim)
    if args.json:
        print(jsonio.dumps(result, indent=2))
        return result
    quant = f" ({result['quantization']} checkpoint)" if result["quantization"] else ""
    print(f"# serve{quant}:")
    print(result["cli"])
    print("\n# or in Python:")
    print(result["python"])
    prompts = result["prompts"]
    if any(prompts.values()):
        print(f"\n# vLLM adds no prompts: prefix queries with {prompts['query']!r}", end="")
        print(f" and documents with {prompts['document']!r}")
    return result

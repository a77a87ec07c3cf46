"""`compass-jax demo`: the whole system end to end, offline, on the embedded default model: the
data build, the base model's evaluation, CAM training and its no-CAM ablation, the merge sweep,
bf16 and FP8 exports, and a report with the checks the run is judged by
(`compass_jax.workflows.demo`). Every stage resumes where it stopped; `--size` scales the run.
"""

from __future__ import annotations

import argparse
from typing import Any

from compass_jax.commands import flags
from compass_jax.workflows.demo import EXPERIMENTS, SIZES, run_demo

HELP = "run the whole system end to end on the bundled data and the default model (offline)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", choices=list(SIZES), default="small", help="how big a run")
    flags.add_model(p, help="base model: HF directory or name")
    p.add_argument(
        "--out",
        type=flags.writable("dir"),
        default="out/demo",
        help="working and results directory (resumed)",
    )
    p.add_argument(
        "--devices",
        type=flags.count,
        default=8,
        help="simulated CPU devices of the mesh",
    )
    p.add_argument("--fresh", action="store_true", help="delete --out first (no resuming)")
    p.add_argument(
        "--seed",
        type=flags.natural,
        default=0,
        help="catalog and split seed (the test items), and the first training seed",
    )
    p.add_argument(
        "--seeds",
        type=flags.count,
        default=None,
        help="training runs per arm, run s with seed --seed + s (default: the size's)",
    )
    p.add_argument(
        "--experiment",
        action="append",
        choices=EXPERIMENTS,
        default=[],
        help="also run an experiment: cam-density (CAM minus no-CAM by the batches' "
        "same-class share)",
    )
    p.add_argument(
        "--readme",
        metavar="README.md",
        help="rewrite this README's demo block (and docs/demo figures) from the run",
    )
    flags.add_quiet(p)


def run(args: argparse.Namespace) -> dict[str, Any]:
    return run_demo(
        args.size,
        model=args.model,
        out=args.out,
        devices=args.devices,
        fresh=args.fresh,
        seed=args.seed,
        seeds=args.seeds,
        experiments=args.experiment,
        readme=args.readme,
        progress=not args.quiet,
    )

"""`compass-jax train`: CAM contrastive training from a config file, resuming by itself."""

from __future__ import annotations

import argparse
import os

import jax

from compass_jax import configio, jsonio, trainer
from compass_jax.commands import flags
from compass_jax.experiment import TrainConfig

HELP = "train with CAM-InfoNCE (GradCache, sharded); resumes from the workdir's last checkpoint"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="Python file with get_config(), or JSON")
    p.add_argument(
        "--workdir",
        required=True,
        type=flags.writable("dir"),
        help="checkpoints, metrics and logs go here (resumed)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set optim.learning_rate=1e-4",
    )
    multi = p.add_argument_group("multi-host (jax.distributed); omit on a single host")
    multi.add_argument(
        "--coordinator",
        default=os.environ.get("COMPASS_JAX_COORDINATOR"),
        help="host:port of process 0 (or set COMPASS_JAX_COORDINATOR)",
    )
    multi.add_argument(
        "--num-processes",
        type=flags.count,
        default=None,
        help="processes in the job",
    )
    multi.add_argument(
        "--process-id",
        type=flags.natural,
        default=None,
        help="this process, in [0, num-processes)",
    )
    multi.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize() with the cluster's own "
        "environment (TPU pods, SLURM, ...)",
    )
    flags.add_quiet(p)


def _init_distributed(args: argparse.Namespace) -> None:
    if args.coordinator:
        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
    elif args.distributed:
        jax.distributed.initialize()


def run(args: argparse.Namespace) -> list[dict]:
    _init_distributed(args)
    cfg = configio.load(args.config, TrainConfig, args.set)
    os.makedirs(args.workdir, exist_ok=True)
    history = trainer.run(cfg, args.workdir, progress=not args.quiet)
    if history and jax.process_index() == 0:
        print(jsonio.dumps(history[-1]))
    return history

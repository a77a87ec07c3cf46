"""`compass-jax merge-sweep`: merge a base and a fine-tuned model at several `t`, evaluate each
merge, and name the best `t` by a stated objective (`compass_jax.workflows.merge_sweep`).

By default the metrics are two suites' weighted averages, `domain` (`--domain-suite`) and
`general` (`--general-suite`, the forgetting check), and the sweep maximises `domain` while
keeping 98% of the base's `general`. Other metrics plug in with `--metric
name=module:function` (a callable `model_dir -> float`). Results go to `sweep.json`, `sweep.md`
and `sweep.png`, the best merge to `best/`.
"""

from __future__ import annotations

import argparse
import importlib

from compass_jax import jsonio
from compass_jax.commands import flags
from compass_jax.commands.merge import MergeT
from compass_jax.configio import Fraction
from compass_jax.merge import MergeError
from compass_jax.workflows.merge_sweep import (
    DEFAULT_TS,
    Metric,
    Objective,
    markdown_table,
    suite_metrics,
    sweep,
)

HELP = "merge base and tuned models at several t, evaluate each, pick the best t"


def _metric(spec: str) -> tuple[str, Metric]:
    name, sep, target = spec.partition("=")
    module, colon, attr = target.partition(":")
    if not (sep and colon and name and module and attr):
        raise MergeError(f"--metric {spec!r}: expected name=package.module:function")
    try:
        return name, getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise MergeError(f"--metric {spec!r}: cannot import {target} ({e})") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    flags.add_model(p, "--base", required=True, help="the general base model (t = 0)")
    flags.add_model(p, "--tuned", required=True, help="the fine-tuned model (t = 1)")
    p.add_argument(
        "--t",
        type=flags.number(MergeT),
        nargs="+",
        default=list(DEFAULT_TS),
        help="values of t",
    )
    p.add_argument(
        "--mode",
        choices=("mergekit", "geodesic"),
        default="mergekit",
        help="SLERP as mergekit, or geodesic (see merge)",
    )
    p.add_argument("--rules", default=None, help="JSON rules file, as for merge")
    p.add_argument(
        "--metric",
        action="append",
        default=None,
        metavar="NAME=MODULE:FUNCTION",
        help="a metric callable(model_dir) -> float (repeat; replaces the defaults)",
    )
    p.add_argument("--domain-suite", default="sample", help="suite of the `domain` metric")
    p.add_argument("--general-suite", default="general", help="suite of the `general` metric")
    p.add_argument("--maximize", default="domain", help="metric to maximise")
    p.add_argument("--keep", default="general", help="metric whose base value must be kept")
    p.add_argument(
        "--keep-fraction",
        type=flags.number(Fraction),
        default=0.98,
        help="share of the base's --keep metric to keep",
    )
    p.add_argument("--keep-models", action="store_true", help="keep every merge, not only best")
    flags.add_output(p, kind="dir", help="directory for sweep.{json,md,png} and best/")
    flags.add_quiet(p)


def run(args: argparse.Namespace) -> dict:
    if args.metric:
        metrics = dict(_metric(spec) for spec in args.metric)
    else:
        metrics = suite_metrics(args.domain_suite, args.general_suite)
    result = sweep(
        args.base,
        args.tuned,
        args.t,
        metrics,
        Objective(args.maximize, args.keep, args.keep_fraction),
        out_dir=args.out,
        mode=args.mode,
        rules=args.rules,
        keep_models=args.keep_models,
        progress=not args.quiet,
    )
    print(markdown_table(result))
    print(jsonio.dumps({k: result[k] for k in ("best_t", "best_model", "seconds")}))
    if result["best_t"] is None:
        print(f"no t keeps {args.keep_fraction:.0%} of the base's {args.keep}")
    return result

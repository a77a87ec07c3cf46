"""`compass-jax merge`: merge Hugging Face checkpoints on disk, one tensor at a time.

Memory holds about two tensors per input, never whole models. Each input is a HF directory, a
bundled name, a training workdir or `workdir@step` (`compass_jax.resolve`). Every floating tensor
the inputs share is merged, sentence-transformers module weights (`2_Dense/`) included; policies
are chosen per compass-jax param path, or per name outside the encoder's key table (`--rules`,
the same rules file as the in-memory API). The output is the first model's directory with merged
weights (same shards, config, tokenizer and sentence-transformers files) plus
`merge_report.json`, written under a temporary name and renamed when complete
(`compass_jax.workflows.merge`).
"""

from __future__ import annotations

import argparse
from typing import Annotated

from compass_jax import jsonio
from compass_jax.commands import flags
from compass_jax.configio import NonNegative, Range
from compass_jax.merge import METHODS, T_RANGE, load_rules
from compass_jax.workflows.merge import merge_checkpoints

HELP = "merge checkpoints (slerp | lerp | karcher | task_slerp), streaming tensor by tensor"
MergeT = Annotated[float, Range(ge=T_RANGE[0], le=T_RANGE[1])]  # finite, in T_RANGE


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--models", nargs="+", required=True, help="HF dirs, names, workdirs or workdir@step"
    )
    p.add_argument("--method", choices=METHODS, default="slerp", help="merge method")
    p.add_argument("--base", default=None, help="base model of task_slerp's task vectors")
    p.add_argument(
        "--t",
        type=flags.number(MergeT),
        default=0.5,
        help="0 keeps the first model, 1 the second; outside [0, 1] extrapolates",
    )
    p.add_argument(
        "--weights",
        type=flags.number(NonNegative),
        nargs="+",
        default=None,
        help="karcher/lerp weights, one per model",
    )
    p.add_argument("--rules", default=None, help="JSON list of [regex, policy] (see README)")
    p.add_argument(
        "--mode",
        choices=("mergekit", "geodesic"),
        default="mergekit",
        help="mergekit: its SLERP exactly; geodesic: on the sphere, norms linear",
    )
    p.add_argument(
        "--tol",
        type=flags.positive,
        default=1e-5,
        help="karcher: stop below this update",
    )
    p.add_argument(
        "--max-iter",
        type=flags.count,
        default=10,
        help="karcher: iteration cap",
    )
    flags.add_output(p, kind="dir", help="output HF directory")
    flags.add_quiet(p)


def run(args: argparse.Namespace) -> dict:
    summary = merge_checkpoints(
        args.models,
        args.out,
        method=args.method,
        base=args.base,
        t=args.t,
        weights=args.weights,
        rules=load_rules(args.rules) if args.rules else None,
        mode=args.mode,
        tol=args.tol,
        max_iter=args.max_iter,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(jsonio.dumps(summary))
    return summary

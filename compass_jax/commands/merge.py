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

from compass_jax import jsonio
from compass_jax.merge import METHODS, load_rules
from compass_jax.workflows.merge import merge_checkpoints

HELP = "merge checkpoints (slerp | lerp | karcher | task_slerp), streaming tensor by tensor"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--models", nargs="+", required=True, help="HF dirs, names, workdirs or workdir@step"
    )
    p.add_argument("--method", choices=METHODS, default="slerp")
    p.add_argument("--base", default=None, help="base model of task_slerp's task vectors")
    help_t = "0 keeps the first model, 1 the second; in [-1, 2] (outside [0, 1] extrapolates)"
    p.add_argument("--t", type=float, default=0.5, help=help_t)
    p.add_argument("--weights", type=float, nargs="+", default=None, help="karcher/lerp weights")
    p.add_argument("--rules", default=None, help="JSON list of [regex, policy] (see README)")
    p.add_argument("--mode", choices=("mergekit", "geodesic"), default="mergekit")
    p.add_argument("--tol", type=float, default=1e-5, help="karcher: stop below this update")
    p.add_argument("--max-iter", type=int, default=10, help="karcher: iteration cap")
    p.add_argument("--out", required=True, help="output HF directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")


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
    )
    print(jsonio.dumps(summary))
    return summary

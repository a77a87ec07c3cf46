"""`compass-jax data`: build TFDS training datasets from a product catalog (`build`: in process
and resumable, or as an Apache Beam pipeline on any Beam runner), export a split as the JSONL
the trainer reads (`export-jsonl`), write an evaluation suite from a held-out split (`suite`),
write the bundled multilingual catalog (`catalog`), or check catalog files (`validate`)."""

from __future__ import annotations

import argparse
import os
import time

from compass_jax import jsonio
from compass_jax.commands import flags

HELP = "build TFDS training data from a product catalog (and export, validate, generate)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", required=True)
    b = sub.add_parser("build", help="run the data pipelines (resumable; or on Apache Beam)")
    b.add_argument(
        "--config",
        default=None,
        help="JSON (or .py get_config()) build config; "
        "default: pipelines/configs/default.json (the bundled catalog)",
    )
    b.add_argument("--out", required=True, type=flags.writable("dir"), help="build directory")
    b.add_argument("--runner", choices=("local", "beam"), default="local",
                   help="local: in process, resumable; beam: the Beam pipeline")  # fmt: skip
    b.add_argument("--beam-options", type=flags.words, default="",
                   help='Beam pipeline options, e.g. --beam-options="--runner=FlinkRunner ..." '
                   "(default: DirectRunner)")  # fmt: skip
    b.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set catalog.generate_size=2000",
    )
    b.add_argument("--until", default=None, help="stop after this stage")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    e = sub.add_parser("export-jsonl", help="a split of a build as trainer JSONL")
    e.add_argument("--data", required=True, help="build directory")
    flags.add_output(e, kind="file", suffix=".jsonl", help="output .jsonl")
    e.add_argument("--split", default="train", help="split to export")
    e.add_argument("--tasks", default=None, help="comma-separated tasks (default: all)")
    s = sub.add_parser("suite", help="an evaluation suite from a build's held-out split")
    s.add_argument("--data", required=True, help="build directory")
    flags.add_output(s, kind="dir", help="suite directory (suite.json + task JSONL)")
    s.add_argument("--split", default="test", help="held-out split to evaluate on")
    s.add_argument("--max-per-task", type=flags.count, default=400, help="records per task")
    g = sub.add_parser("general-suite", help="the general-domain suite (package translations)")
    flags.add_output(g, kind="dir", help="suite directory (suite.json + task JSONL)")
    g.add_argument("--pairs-per-language", type=flags.count, default=1000, help="per language")
    g.add_argument("--seed", type=flags.natural, default=0, help="seed")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    c = sub.add_parser("catalog", help="write the bundled multilingual catalog")
    flags.add_output(c, kind="dir", help="directory for catalog-*.jsonl")
    c.add_argument("--size", type=flags.count, default=20000, help="product groups")
    c.add_argument("--seed", type=flags.natural, default=0, help="seed")
    c.add_argument("--files", type=flags.count, default=8, help="JSONL files")
    v = sub.add_parser("validate", help="check catalog JSONL files")
    v.add_argument("files", nargs="+", help="catalog JSONL files")


def run(args: argparse.Namespace):
    commands = {"build": _build, "export-jsonl": _export, "suite": _suite, "catalog": _catalog,
                "validate": _validate, "general-suite": _general_suite}  # fmt: skip
    return commands[args.data_command](args)


def _build(args):
    from pipelines import build
    from pipelines.config import load_config

    cfg = load_config(args.config, args.set)
    tic = time.perf_counter()
    ran = build.run(cfg, args.out, runner=args.runner, beam_options=args.beam_options,
                    progress=not args.quiet, until=args.until)  # fmt: skip
    summary = {
        "out": os.path.abspath(args.out),
        "units_run": ran,
        "seconds": round(time.perf_counter() - tic, 1),
    }
    card = os.path.join(args.out, "card.md")
    if os.path.exists(card):
        with open(card, encoding="utf-8") as f:
            print(f.read())
    print(jsonio.dumps(summary))
    return summary


def _export(args):
    from pipelines.export import export_jsonl

    tasks = args.tasks.split(",") if args.tasks else None
    counts = export_jsonl(args.data, args.out, split=args.split, tasks=tasks)
    print(jsonio.dumps({"out": args.out, "split": args.split, "records": counts}))
    return counts


def _suite(args):
    from pipelines.suite import write_suite

    path = write_suite(args.data, args.out, split=args.split, max_per_task=args.max_per_task)
    tasks = [t["name"] for t in jsonio.read_json(path)["tasks"]]
    print(jsonio.dumps({"suite": path, "tasks": tasks}))
    return path


def _general_suite(args):
    from pipelines.general_suite import write_general_suite

    path = write_general_suite(args.out, pairs_per_language=args.pairs_per_language,
                               seed=args.seed, progress=not args.quiet)  # fmt: skip
    print(jsonio.dumps({"suite": path}))
    return path


def _catalog(args):
    from pipelines.catalog.generate import write_catalog_file

    os.makedirs(args.out, exist_ok=True)
    total = 0
    for i in range(args.files):
        path = os.path.join(args.out, f"catalog-{i:05d}-of-{args.files:05d}.jsonl")
        total += write_catalog_file(path, args.size, args.seed, args.files, i)
    print(jsonio.dumps({"out": args.out, "groups": args.size, "listings": total}))
    return total


def _validate(args):
    from pipelines.catalog.schema import read_catalog

    counts = {}
    for path in args.files:
        counts[path] = sum(1 for _ in read_catalog(path))
    print(jsonio.dumps({"valid": counts}))
    return counts

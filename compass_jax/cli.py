"""The `compass-jax` command."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name -> module under compass_jax.commands (imported only when run, to keep --help fast)
COMMANDS = {
    "embed": "embed",
    "train": "train",
    "data": "data",
    "eval": "eval",
    "demo": "demo",
    "merge": "merge",
    "merge-sweep": "merge_sweep",
    "export": "export",
    "serve-command": "serve_command",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compass-jax", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"compass_jax.commands.{module_name}")
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("compass_jax").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        if args.verbose:
            raise
        print(f"compass-jax {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

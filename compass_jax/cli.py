"""The `compass-jax` command.

One error boundary for every subcommand: an expected failure (a bad flag, file, config or
checkpoint, an output that cannot be written, an OS error) is one line on stderr naming the
flag, file or field, and exit status 2; `--verbose` shows its traceback. Anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from compass_jax import __version__

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
# Failures a user can fix: every error class of the project is a ValueError (ConfigError,
# JSONFileError, CheckpointError, ...) and the file system's are OSErrors.
EXPECTED = (OSError, ValueError)


def build_parser() -> argparse.ArgumentParser:
    from compass_jax.commands.flags import Parser

    parser = Parser(prog="compass-jax", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, tracebacks")
    parser.add_argument("--version", action="version", version=f"compass-jax {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"compass_jax.commands.{module_name}")
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def _message(error: BaseException) -> str:
    """One line: an OSError from the system (`[Errno 13] ...: 'x'`) as `x: Permission denied`."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        target = f" -> {error.filename2}" if error.filename2 else ""
        return f"{error.filename}{target}: {error.strerror}"
    return str(error)


def main(argv: list[str] | None = None) -> int:
    from compass_jax.commands.flags import check_outputs

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version, or a bad flag (reported in one line)
        return e.code if isinstance(e.code, int) else 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("compass_jax").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    name = " ".join(filter(None, (args.command, getattr(args, "data_command", None))))
    try:
        check_outputs(args)
        args.run(args)
    except EXPECTED as e:
        if args.verbose:
            raise
        print(f"compass-jax {name}: error: {_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"compass-jax {name}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

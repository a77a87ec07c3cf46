"""The flags the commands share, declared once so they mean one thing everywhere.

- Numbers are read by `configio.flag_type`: the same finiteness and range checks as the fields
  of a config file (`--t nan`, `--batch-size 0` are refused while parsing, before any work).
- Outputs (`add_output`) are checked for writability while parsing (`atomic.check_writable`:
  a read-only folder, a directory where a file belongs, a file where a folder belongs), and an
  output that exists is refused before any work unless `--overwrite` (replace it, once the new
  one is complete). Resumable outputs (a training workdir, a data build) take `writable` only.
- `--dtype` takes every spelling of `config.DTYPES` (float32/fp32, bfloat16/bf16).
- `--quiet` turns off progress bars.
- `Parser` shows defaults in every `--help` and reports a bad flag in one line (exit 2).
"""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Callable
from typing import Any, Literal

from compass_jax import atomic
from compass_jax.config import DTYPES, Dtype, canonical_dtype
from compass_jax.configio import Count, NonNegativeInt, Positive, flag_type
from compass_jax.resolve import DEFAULT_MODEL

__all__ = ["Parser", "add_dtype", "add_model", "add_output", "add_quiet", "check_outputs",
           "count", "natural", "number", "positive", "words", "writable"]  # fmt: skip

number = flag_type  # `type=number(Positive)`
count = number(Count)  # sizes, steps, dimensions: 1, 2, ...
natural = number(NonNegativeInt)  # seeds, indices: 0, 1, ...
positive = number(Positive)  # tolerances, timeouts: > 0


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`(default: x)` after each help line that has a default worth showing (not for required
    flags, switches and unset options, whose help says what happens)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.required or action.default in (None, False, argparse.SUPPRESS, []):
            return action.help or ""
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` with defaults in `--help` (subcommands included) and a
    one-line error: `compass-jax merge: error: argument --t: nan is not a finite number`."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} ({self.prog} --help for usage)\n")


def writable(kind: Literal["file", "dir"], suffix: str | None = None) -> Callable[[str], str]:
    """An argparse `type=` for an output path: a `kind` that can be written there (and, for a
    file, ends in `suffix`)."""

    def parse(text: str) -> str:
        if suffix and not text.endswith(suffix):
            raise argparse.ArgumentTypeError(f"{text}: must end in {suffix}")
        try:
            atomic.check_writable(text, directory=kind == "dir")
        except OSError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return text

    parse.__name__ = f"writable {kind}"
    return parse


def words(text: str) -> list[str]:
    """An argparse `type=` that splits a flag's text as a shell does
    (`--beam-options="--runner=FlinkRunner --flink_master=host:8081"`)."""
    try:
        return shlex.split(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{e} in {text!r}") from None


def add_output(
    p: argparse.ArgumentParser,
    *names: str,
    kind: Literal["file", "dir"],
    help: str,
    suffix: str | None = None,
) -> None:
    """The command's output flag (`--out`, and any alias), required, checked by `writable`;
    with `--overwrite`, added once per command, and the existence check of `check_outputs`."""
    names = names or ("--out",)
    action = p.add_argument(*names, required=True, type=writable(kind, suffix), help=help)
    p.set_defaults(_outputs=(*(p.get_default("_outputs") or ()), action.dest))
    if p.get_default("overwrite") is None:  # once per command
        p.add_argument(
            "--overwrite",
            action="store_true",
            help="replace an existing output (only once the new one is complete)",
        )


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before any work, an output that exists (a file, or a non-empty folder) unless
    `--overwrite`; a `FileExistsError` naming the flag and the path."""
    for dest in getattr(args, "_outputs", ()):
        path = getattr(args, dest)
        if args.overwrite or not os.path.exists(path):
            continue
        if os.path.isdir(path) and not os.listdir(path):
            continue
        flag = "--" + dest.replace("_", "-")
        raise FileExistsError(f"{flag} {path}: already exists (pass --overwrite to replace it)")


def add_model(p: argparse.ArgumentParser, *names: str, help: str | None = None, **kw) -> None:
    """A model argument: anything `compass_jax.resolve` takes."""
    kw.setdefault("default", None if kw.get("required") else DEFAULT_MODEL)
    p.add_argument(
        *(names or ("--model",)),
        help=help or "HF directory, bundled name, hub id, training workdir or workdir@step",
        **kw,
    )


def add_dtype(p: argparse.ArgumentParser, default: str = "float32", help: str = "") -> None:
    """`--dtype` in any spelling of `config.DTYPES`, read as its canonical name."""
    metavar = "{" + ",".join(DTYPES) + "}"
    p.add_argument("--dtype", type=number(Dtype), default=canonical_dtype(default),
                   metavar=metavar, help=help or "compute dtype")  # fmt: skip


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars")

"""One set of flags: a help line on every flag, defaults in every `--help`, numbers checked like
config fields, `--out`, `--overwrite`, `--dtype` and `--quiet` meaning one thing everywhere."""

import argparse
import re

import pytest

from compass_jax import __version__, cli


def _parsers(parser=None, name="compass-jax"):
    """`(name, parser)` for the top-level parser and every subcommand, nested ones included."""
    parser = parser or cli.build_parser()
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, child in action.choices.items():
                yield from _parsers(child, f"{name} {sub}")


PARSERS = dict(_parsers())
# what each writes: every command that writes a result takes `--out` (train: its workdir)
WRITERS = {"embed", "eval", "export", "merge", "merge-sweep", "demo", "data build",
           "data export-jsonl", "data suite", "data general-suite", "data catalog"}  # fmt: skip
WITH_PROGRESS = {"embed", "eval", "export", "merge", "merge-sweep", "train", "demo",
                 "data build", "data general-suite"}  # fmt: skip


def _flags(parser):
    return {o: a for a in parser._actions for o in a.option_strings}


def test_every_flag_has_a_help_line_and_numbers_are_checked():
    for name, parser in PARSERS.items():
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help.strip(), f"{name} {action.option_strings}"
            # plain int/float would take nan, inf and any sign
            assert action.type not in (int, float), f"{name} {action.option_strings}"


def test_outputs_overwrite_dtype_and_quiet_are_the_same_everywhere():
    overwrite_help = set()
    for full, parser in PARSERS.items():
        name = full.removeprefix("compass-jax ")
        flags = _flags(parser)
        if name in WRITERS:
            assert "--out" in flags, name
        if "--overwrite" in flags:
            overwrite_help.add(flags["--overwrite"].help)
            assert parser.get_default("_outputs"), name
        if "--dtype" in flags:
            read = flags["--dtype"].type
            assert (read("bf16"), read("bfloat16"), read("fp32")) == ("bfloat16",) * 2 + (
                "float32",
            )
        assert ("--quiet" in flags) == (name in WITH_PROGRESS), name
    assert len(overwrite_help) == 1
    assert _flags(PARSERS["compass-jax embed"])["--output"].dest == "out"  # kept as an alias


@pytest.mark.parametrize("argv, shown", [
    (["embed", "--help"], "(default: 32)"),
    (["export", "--help"], "(default: 0.99)"),
    (["data", "catalog", "--help"], "(default: 20000)"),
    (["merge-sweep", "--help"], "(default: 0.98)"),
])  # fmt: skip
def test_help_shows_defaults(argv, shown, capsys):
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert shown in re.sub(r"\s+", " ", out)
    assert "(default: None)" not in out and "(default: False)" not in out


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"compass-jax {__version__}"

"""Typed configs from JSON, Python files and `--set a.b=value` overrides: one engine for every
config of the project (training experiments, data builds).

A config is a frozen dataclass whose annotations are its schema. Every way in goes through one
check of each value against its field: unknown keys, wrong types, non-finite floats and numbers
out of range are `ConfigError`s naming the source (a file, or the `--set` flag) and the dotted
field, e.g. `run.py: optim.learning_rate: must be > 0, got -1.0`. A range is declared once, with
its field, as `Annotated` metadata::

    steps: Annotated[int, Range(ge=1)] = 1000   # or the alias: steps: Count = 1000
    dtype: Annotated[str, Spellings((("fp32", "float32"), ...))]  # any spelling, one value

- `build(cls, raw, source)`: a config from a JSON object (nested objects become nested configs).
- `validate(cfg, source)`: a config built in Python (a `get_config()`), checked the same way.
- `override(cfg, assignments)`: `a.b=value` assignments; the value is parsed as JSON (else taken
  as a string) and checked against the field's type and range.
- `load(path, cls, overrides)`: a `.py` file with `get_config()` (returning `cls` or a dict) or a
  JSON file, then overrides.
- `to_json(cfg)`: the plain JSON view (what a workdir or a build records).
- `check(hint, value, source, path)`: one value checked against a type, as a field is (for
  files that are not configs of ours, such as a Hugging Face `config.json`).
- `flag_type(hint, flag)`: an argparse `type=` checking a command-line flag like a field.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib.util
import json
import math
import operator
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal

from compass_jax import jsonio

__all__ = [
    "ConfigError", "Count", "Fraction", "NonNegative", "NonNegativeInt", "Positive", "Range",
    "Spellings", "build", "check", "flag_type", "load", "override", "to_json", "validate",
]  # fmt: skip


class ConfigError(ValueError):
    """A configuration that compass-jax cannot honour; the message names the source and field."""


@dataclasses.dataclass(frozen=True)
class Range:
    """Bounds of a numeric field, as `Annotated[int, Range(ge=1)]` metadata."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def problem(self, value: float) -> str | None:
        for name, sign, holds in (("ge", ">=", operator.ge), ("gt", ">", operator.gt),
                                  ("le", "<=", operator.le), ("lt", "<", operator.lt)):  # fmt: skip
            bound = getattr(self, name)
            if bound is not None and not holds(value, bound):
                return f"must be {sign} {bound}, got {value!r}"
        return None


@dataclasses.dataclass(frozen=True)
class Spellings:
    """The accepted spellings of a string field and the value each stands for, as
    `Annotated[str, Spellings((("fp32", "float32"), ...))]` metadata: a field (or flag) reads
    any spelling and holds the canonical value."""

    pairs: tuple[tuple[str, str], ...]

    def read(self, value: str) -> tuple[str | None, str | None]:
        """`(canonical value, None)`, or `(None, problem)`."""
        found = dict(self.pairs)
        if value in found:
            return found[value], None
        return None, f"expected one of {sorted(found)}, got {value!r}"


Count = Annotated[int, Range(ge=1)]  # sizes, steps, periods
NonNegativeInt = Annotated[int, Range(ge=0)]
Positive = Annotated[float, Range(gt=0)]
NonNegative = Annotated[float, Range(ge=0)]
Fraction = Annotated[float, Range(ge=0, le=1)]


def _at(source: str, path: str, problem: str) -> ConfigError:
    """`file: a.b: problem`, or `--set a.b: problem` for a flag."""
    if not path:
        return ConfigError(f"{source}: {problem}")
    return ConfigError(f"{source}{' ' if source.startswith('-') else ': '}{path}: {problem}")


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    return {k: v for k, v in typing.get_type_hints(cls, include_extras=True).items() if k in names}


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _convert(hint: Any, value: Any, source: str, path: str) -> Any:
    """`value` checked against `hint` (and converted: lists to tuples, ints to floats, objects to
    dataclasses)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        value = _convert(args[0], value, source, path)
        for meta in hint.__metadata__:
            problem = meta.problem(value) if isinstance(meta, Range) else None
            if isinstance(meta, Spellings):
                value, problem = meta.read(value)
            if problem:
                raise _at(source, path, problem)
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(option, value, source, path)
            except ConfigError as e:
                errors.append(e)
        if len(options) == 1:
            raise errors[0]
        raise _at(source, path, f"{value!r} is none of {_type_name(hint)}")
    if origin is Literal:
        if value not in args or type(value) not in {type(a) for a in args}:
            raise _at(source, path, f"expected one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            value = to_json(value)
        return build(hint, value, source, path)
    if origin in (tuple, Sequence) or hint in (tuple, Sequence):
        if not isinstance(value, list | tuple):
            raise _at(source, path, f"expected a list, got {value!r}")
        if args and args[-1] is not Ellipsis and origin is tuple:
            if len(value) != len(args):
                raise _at(source, path, f"expected {len(args)} items, got {list(value)!r}")
            hints = args
        else:
            hints = [args[0] if args else Any] * len(value)
        return tuple(
            _convert(h, v, source, f"{path}[{i}]")
            for i, (h, v) in enumerate(zip(hints, value, strict=True))
        )
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _at(source, path, f"expected an object, got {value!r}")
        key_hint, value_hint = args or (str, Any)
        return {
            _convert(key_hint, k, source, path): _convert(value_hint, v, source, _join(path, k))
            for k, v in value.items()
        }
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _at(source, path, f"expected float, got {value!r}")
        if not math.isfinite(value):
            raise _at(source, path, f"{value!r} is not a finite number")
        return float(value)
    if hint in (int, str, bool) and type(value) is not hint:
        raise _at(source, path, f"expected {hint.__name__}, got {value!r}")
    return value


def check(hint: Any, value: Any, source: str, path: str = "") -> Any:
    """`value` checked against `hint` (a type, `Annotated` with a `Range`, a union, a list, a
    dataclass, ...) and converted as a field's value is, or a `ConfigError` naming `source` and
    `path`: for the fields of files that are not configs of ours (a Hugging Face
    `config.json`, a suite file)."""
    return _convert(hint, value, source, path)


def build(cls: type, raw: Any, source: str, path: str = "") -> Any:
    """A `cls` config from a JSON object, every field checked; `source` names the file."""
    if not isinstance(raw, Mapping):
        raise _at(source, path, f"expected an object ({cls.__name__}), got {raw!r}")
    hints = _hints(cls)
    for key in raw:
        if key not in hints:
            known = ", ".join(hints)
            raise _at(source, _join(path, key), f"{cls.__name__} has no field {key!r} ({known})")
    required = [f.name for f in dataclasses.fields(cls) if f.init and _required(f)]
    missing = [name for name in required if name not in raw]
    if missing:
        raise _at(source, path, f"{cls.__name__} needs field {missing[0]!r}")
    values = {k: _convert(hints[k], v, source, _join(path, k)) for k, v in raw.items()}
    try:
        return cls(**values)
    except ConfigError as e:  # a class's own cross-field checks (`__post_init__`)
        raise _at(source, path, str(e)) from None


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def validate(cfg: Any, source: str) -> Any:
    """`cfg` (a config dataclass built in Python) checked like a file: the same config, with
    lists as tuples and ints as floats where the fields say so."""
    return build(type(cfg), to_json(cfg), source)


def _parse(text: str) -> Any:
    try:  # NaN and Infinity parse to floats, so the field check names them
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _container(hint: Any) -> Any:
    """The dataclass or mapping type inside `Annotated[...]` and `... | None`."""
    while True:
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin is Annotated:
            hint = args[0]
        elif origin in (typing.Union, types.UnionType):
            options = [a for a in args if a is not type(None)]
            if len(options) != 1:
                return hint
            hint = options[0]
        else:
            return hint


def _set(hint: Any, node: Any, keys: Sequence[str], value: Any, dotted: str) -> Any:
    """`node` (of type `hint`) with the value at `keys` replaced by `value`."""
    if not keys:
        return _convert(hint, value, "--set", dotted)
    head, rest = keys[0], keys[1:]
    target = _container(hint)
    if dataclasses.is_dataclass(target):
        node = target() if node is None else node  # an absent optional section starts as default
        fields = _hints(target)
        if head not in fields:
            known = ", ".join(fields)
            raise _at("--set", dotted, f"{target.__name__} has no field {head!r} ({known})")
        changed = _set(fields[head], getattr(node, head), rest, value, dotted)
        return dataclasses.replace(node, **{head: changed})
    if typing.get_origin(target) in (dict, Mapping):
        node = dict(node or {})
        # A new per-task entry starts from the "default" one.
        current = node.get(head, node.get("default"))
        node[head] = _set(typing.get_args(target)[1], current, rest, value, dotted)
        return node
    raise _at("--set", dotted, f"{head!r} is inside a {_type_name(target)}, which has no fields")


def override(cfg: Any, assignments: Sequence[str]) -> Any:
    """`cfg` with each `a.b=value` assignment applied in order, each value checked."""
    for assignment in assignments:
        dotted, sep, text = assignment.partition("=")
        if not sep:
            raise ConfigError(f"--set {assignment!r}: expected key=value")
        dotted = dotted.strip()
        cfg = _set(type(cfg), cfg, dotted.split("."), _parse(text.strip()), dotted)
    return cfg


def _python_config(path: str) -> Any:
    """`get_config()` of a Python config file; a failure in the file (a syntax error, an
    exception while it runs) is a `ConfigError` naming it (`--verbose` shows the traceback)."""
    spec = importlib.util.spec_from_file_location("compass_jax_config_file", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        if not hasattr(module, "get_config"):
            raise ConfigError(f"{path}: defines no get_config()")
        return module.get_config()
    except ConfigError as e:
        if str(e).startswith(path):
            raise
        raise ConfigError(f"{path}: {e}") from None
    except SyntaxError as e:
        raise ConfigError(f"{path}:{e.lineno}: {e.msg}") from e
    except Exception as e:  # the user's code: named, with its traceback kept for --verbose
        raise ConfigError(f"{path}: {type(e).__name__}: {e}") from e


def load(path: str | os.PathLike, cls: type, overrides: Sequence[str] = ()) -> Any:
    """The `cls` config in `path` (a Python file with `get_config()`, or JSON), with overrides."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a directory, not a config file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such config file")
    raw = _python_config(path) if path.endswith(".py") else jsonio.read_json(path)
    if isinstance(raw, cls):
        cfg = validate(raw, path)
    elif isinstance(raw, Mapping):
        cfg = build(cls, raw, path)
    else:
        raise ConfigError(
            f"{path}: get_config() returned {type(raw).__name__}, not {cls.__name__} or a dict"
        )
    return override(cfg, overrides)


def to_json(cfg: Any) -> Any:
    """A JSON view of a config: dataclasses become objects, tuples lists."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_json(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, Mapping):
        return {k: to_json(v) for k, v in cfg.items()}
    if isinstance(cfg, tuple | list):
        return [to_json(v) for v in cfg]
    return cfg


def _is_sequence(hint: Any) -> bool:
    hint = _container(hint)
    return typing.get_origin(hint) in (tuple, Sequence) or hint in (tuple, Sequence)


def _flag_value(text: str) -> Any:
    value = _parse(text)
    if isinstance(value, str):  # Python's spellings too (nan, inf), as `type=float` reads
        with contextlib.suppress(ValueError):
            value = float(value)
    return value


def flag_type(hint: Any, flag: str = "") -> Callable[[str], Any]:
    """An argparse `type=` that reads a flag's text as a value of `hint` (`Positive`,
    `Annotated[float, Range(ge=0, le=1)]`, `tuple[Count, ...]` from `64,128` or `[64, 128]`,
    ...), so flags are checked like config fields. argparse names the flag in its message;
    `flag` names it when the parser is called by hand."""

    def parse(text: str) -> Any:
        value = _flag_value(text)
        if _is_sequence(hint) and not isinstance(value, list):
            value = [_flag_value(item) for item in text.split(",") if item.strip()]
        try:
            return _convert(hint, value, flag, "")
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix(f"{flag}: ")) from None

    parse.__name__ = _type_name(hint)  # argparse names the type in some messages
    return parse

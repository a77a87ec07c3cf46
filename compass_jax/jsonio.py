"""JSON and JSONL, read and written one way everywhere.

Written JSON is strict (RFC 8259): a NaN or an infinity anywhere in a value is an error that
names where it sits (`report.rows[3].cosine`), never a bare `NaN` token that other parsers
reject. Files are written to a temporary name and renamed (`compass_jax.atomic`), so a reader
never sees half a file and a failed write keeps the old one. Read errors name the file and, for
JSONL, the line.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from compass_jax.atomic import atomic_open


class JSONFileError(ValueError):
    """A JSON file that cannot be read as expected; the message names the file (and line)."""


def plain(value: Any, where: str = "value") -> Any:
    """`value` as plain JSON types (numpy scalars and arrays become numbers and lists), or a
    `ValueError` naming the first non-finite number inside it (`where.key[3]`)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if type(value).__module__ == "numpy":
        value = value.tolist()  # numpy scalar -> Python number, array -> nested lists
        if isinstance(value, list):
            return plain(value, where)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: {value!r} is not a finite number (strict JSON)")
    return value


# A list of numbers laid out one per line by `indent`; strings cannot hold a raw newline, so
# "[" followed by a newline is always structural.
_NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?"
_NUMBER_LIST = re.compile(rf"\[\n\s*({_NUMBER}(?:,\n\s*{_NUMBER})*)\n\s*\]")


def dumps(value: Any, *, indent: int | None = None, where: str = "value") -> str:
    """Strict JSON text of `value` (see `plain`); non-ASCII kept as is. With `indent`, a list
    of numbers stays on one line (per-item scores, curves): nested structure is indented, long
    numeric arrays are not spread over a line per number."""
    text = json.dumps(plain(value, where), indent=indent, ensure_ascii=False, allow_nan=False)
    if indent is None:
        return text
    return _NUMBER_LIST.sub(lambda m: "[" + re.sub(r",\n\s*", ", ", m[1]) + "]", text)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (only finite numbers are)")


def loads(text: str) -> Any:
    """Strict JSON: `NaN` and `Infinity` tokens are refused (json.JSONDecodeError/ValueError)."""
    return json.loads(text, parse_constant=_refuse_constant)


def write_json(path: str | os.PathLike, value: Any, *, indent: int | None = 1) -> None:
    """Write `value` as strict JSON to `path`, atomically (a trailing newline included)."""
    path = os.fspath(path)
    text = dumps(value, indent=indent, where=os.path.basename(path))
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text + "\n")


def write_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> int:
    """Write one strict-JSON line per record to `path`, atomically; returns the count."""
    path = os.fspath(path)
    name, count = os.path.basename(path), 0
    with atomic_open(path, "w", encoding="utf-8") as f:
        for count, record in enumerate(records, start=1):
            f.write(dumps(record, where=f"{name}:{count}") + "\n")
    return count


def append_jsonl(path: str | os.PathLike, record: Any) -> None:
    """Append one strict-JSON line (for logs that grow while a job runs)."""
    line = dumps(record, where=os.path.basename(os.fspath(path)))
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def _expect(value: Any, expect: type | tuple[type, ...] | None, where: str) -> Any:
    if expect is not None and not isinstance(value, expect):
        names = {dict: "an object", list: "a list", str: "a string"}
        wanted = expect if isinstance(expect, tuple) else (expect,)
        what = " or ".join(names.get(t, t.__name__) for t in wanted)
        got = names.get(type(value), type(value).__name__)
        raise JSONFileError(f"{where}: expected {what}, got {got}")
    return value


def read_json(path: str | os.PathLike, *, expect: type | tuple[type, ...] | None = dict) -> Any:
    """The JSON value in `path`; by default it must be an object."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise JSONFileError(f"{path}: is a directory, not a JSON file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with open(path, encoding="utf-8") as f:
            value = loads(f.read())
    except UnicodeDecodeError as e:
        raise JSONFileError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise JSONFileError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    except ValueError as e:
        raise JSONFileError(f"{path}: {e}") from None
    return _expect(value, expect, path)


def iter_jsonl(
    path: str | os.PathLike, *, expect: type | tuple[type, ...] | None = dict
) -> Iterator[tuple[int, Any]]:
    """`(line number, value)` for every non-blank line of a JSONL file."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise JSONFileError(f"{path}: is a directory, not a JSONL file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise JSONFileError(
                    f"{path}:{number}: not valid UTF-8 ({e.reason} at byte {e.start})"
                ) from None
            if not line.strip():
                continue
            try:
                value = loads(line)
            except json.JSONDecodeError as e:
                raise JSONFileError(f"{path}:{number}: invalid JSON ({e.msg})") from None
            except ValueError as e:
                raise JSONFileError(f"{path}:{number}: {e}") from None
            yield number, _expect(value, expect, f"{path}:{number}")


def read_jsonl(
    path: str | os.PathLike, *, expect: type | tuple[type, ...] | None = dict
) -> list[Any]:
    """Every record of a JSONL file (see `iter_jsonl`)."""
    return [value for _, value in iter_jsonl(path, expect=expect)]

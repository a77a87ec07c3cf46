"""Reading texts for embedding: `.txt` (one per line) or `.jsonl` (a `text` field per line).

Errors name the file and the line; nothing is silently dropped, since an embedding row that
quietly goes missing shifts every row after it.
"""

from __future__ import annotations

import json
import os

from compass_jax import jsonio


class InputError(ValueError):
    """Bad input text; the message names the file and line."""


def read_texts(path: str | os.PathLike, *, field: str = "text") -> list[str]:
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a directory, not an input file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such input file")
    if not path.endswith((".txt", ".jsonl")):
        raise InputError(f"{path}: input must be .txt (one text per line) or .jsonl ('{field}')")
    with open(path, "rb") as f:
        raw_lines = f.read().splitlines()
    texts = []
    for number, raw in enumerate(raw_lines, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(
                f"{path}:{number}: not valid UTF-8 ({e.reason} at byte {e.start})"
            ) from None
        texts.append(_parse_jsonl(path, number, line, field) if path.endswith(".jsonl") else line)
        if not texts[-1].strip():
            raise InputError(f"{path}:{number}: empty text")
    if not texts:
        raise InputError(f"{path}: no texts")
    return texts


def _parse_jsonl(path: str, number: int, line: str, field: str) -> str:
    try:
        record = jsonio.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{number}: invalid JSON ({e.msg})") from None
    except ValueError as e:  # a NaN or Infinity token: not JSON
        raise InputError(f"{path}:{number}: {e}") from None
    if not isinstance(record, dict) or not isinstance(record.get(field), str):
        raise InputError(f"{path}:{number}: expected an object with a string field {field!r}")
    return record[field]

"""The one JSON/JSONL helper: strict output, atomic writes, errors that name file and line."""

import json

import numpy as np
import pytest

from compass_jax import jsonio


def test_written_json_is_strict_and_names_the_non_finite_value(tmp_path):
    path = tmp_path / "report.json"
    jsonio.write_json(path, {"ok": 1})
    with pytest.raises(ValueError, match=r"report\.json\.rows\[1\]\.cos: nan"):
        jsonio.write_json(path, {"rows": [{"cos": 0.5}, {"cos": float("nan")}]})
    assert json.loads(path.read_text()) == {"ok": 1}  # the old file is kept
    with pytest.raises(ValueError, match="inf"):
        jsonio.dumps([np.float32("inf")])


def test_numpy_values_become_plain_json(tmp_path):
    value = {"a": np.float32(0.25), "b": np.arange(3), "c": (np.int64(2),)}
    assert json.loads(jsonio.dumps(value)) == {"a": 0.25, "b": [0, 1, 2], "c": [2]}


def test_jsonl_round_trip_and_line_numbers(tmp_path):
    path = tmp_path / "x.jsonl"
    assert jsonio.write_jsonl(path, [{"i": i} for i in range(3)]) == 3
    jsonio.append_jsonl(path, {"i": 3})
    assert [r["i"] for r in jsonio.read_jsonl(path)] == [0, 1, 2, 3]
    path.write_text('{"i": 0}\n\n{"i": 1\n')
    with pytest.raises(jsonio.JSONFileError, match=r"x\.jsonl:3: invalid JSON"):
        jsonio.read_jsonl(path)
    path.write_text('{"i": 0}\n[1]\n')
    with pytest.raises(jsonio.JSONFileError, match=r"x\.jsonl:2: expected an object, got a list"):
        jsonio.read_jsonl(path)
    path.write_text('{"i": NaN}\n')
    with pytest.raises(jsonio.JSONFileError, match=r"x\.jsonl:1: NaN is not valid JSON"):
        jsonio.read_jsonl(path)


def test_read_json_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.json"):
        jsonio.read_json(tmp_path / "nope.json")
    with pytest.raises(jsonio.JSONFileError, match="is a directory"):
        jsonio.read_json(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(jsonio.JSONFileError, match=r"bad\.json: expected an object, got a list"):
        jsonio.read_json(bad)
    assert jsonio.read_json(bad, expect=list) == [1, 2]
    bad.write_text('{"a": Infinity}')
    with pytest.raises(jsonio.JSONFileError, match="Infinity"):
        jsonio.read_json(bad)
    bad.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(jsonio.JSONFileError, match="UTF-8"):
        jsonio.read_json(bad)


def test_indented_json_keeps_lists_of_numbers_on_one_line():
    value = {"items": [1, 0.5, -2e-05, 3], "nested": [[1, 2], {"a": [0.25]}], "text": ["[", 1]}
    text = jsonio.dumps(value, indent=1)
    assert '"items": [1, 0.5, -2e-05, 3]' in text and '"a": [0.25]' in text
    assert '"text": [\n' in text  # a list holding a string keeps one element per line
    assert json.loads(text) == value

"""Evaluation suites: JSON files naming tasks, their data, prompts and weights.

```json
{"name": "my-suite", "tasks": [
  {"name": "search-id", "type": "retrieval", "lang": "id", "weight": 2, "data": "search_id.jsonl",
   "corpus": "catalog_id.jsonl", "prompts": {"query": "query", "document": "document"}}]}
```
Data paths are relative to the suite file. A task's fields are `_TaskSpec`'s (a positive
`weight`, default 1); the file may also carry `source`, `split` and `metadata`. JSONL record
formats by task type (other fields are ignored):
  retrieval            {"query", "relevant": [texts]}  (+ optional "corpus": JSONL of {"text"})
  classification       {"text", "label", "split": "train" | "test"}
  clustering           {"text", "label"}
  pair_classification  {"a", "b", "label": 0 | 1}
  sts                  {"a", "b", "score"}
  bitext               {"source", "target"}
Every field is checked when read (`configio.check`), so a wrong type or a non-finite number is
an error naming the file, line and field. Built-in suites are named instead of given as a file
(`BUILTIN`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any, Literal

from compass_jax import configio, jsonio
from compass_jax.assets import load_general, load_sample
from compass_jax.configio import ConfigError, Positive

TaskType = Literal["retrieval", "classification", "clustering", "pair_classification", "sts",
                   "bitext"]  # fmt: skip
TASK_TYPES: tuple[str, ...] = TaskType.__args__
Label = int | str
# Per task type: each record's required fields and their types.
RECORD_FIELDS: dict[str, dict[str, Any]] = {
    "retrieval": {"query": str, "relevant": tuple[str, ...]},
    "classification": {"text": str, "label": Label, "split": Literal["train", "test"]},
    "clustering": {"text": str, "label": Label},
    "pair_classification": {"a": str, "b": str, "label": Literal[0, 1]},
    "sts": {"a": str, "b": str, "score": float},
    "bitext": {"source": str, "target": str},
}
REQUIRED_FIELDS = {kind: tuple(fields) for kind, fields in RECORD_FIELDS.items()}


class SuiteError(ConfigError):
    """A malformed suite or task data file; the message names the file (and line)."""


@dataclasses.dataclass(frozen=True)
class _TaskSpec:
    name: str
    type: TaskType
    data: str
    lang: str = ""
    weight: Positive = 1.0
    corpus: str | None = None
    prompts: Mapping[str, str | None] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class _SuiteSpec:
    tasks: tuple[_TaskSpec, ...]
    name: str | None = None
    source: str | None = None
    split: str | None = None
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    type: str
    records: tuple[dict, ...]
    lang: str = ""
    weight: float = 1.0
    corpus: tuple[str, ...] = ()  # retrieval distractors
    prompts: dict[str, str | None] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str
    tasks: tuple[Task, ...]


def read_jsonl(path: str, fields: Mapping[str, Any] | tuple[str, ...] = ()) -> list[dict]:
    """The records of a task's JSONL file, each with `fields` (names, or names -> types)."""
    if not os.path.isfile(path):
        raise SuiteError(f"{path}: no such data file")
    fields = fields if isinstance(fields, Mapping) else dict.fromkeys(fields, Any)
    records, label_types = [], set()
    try:
        for number, record in jsonio.iter_jsonl(path):
            missing = [k for k in fields if k not in record]
            if missing:
                raise SuiteError(f"{path}:{number}: missing field(s) {missing}")
            for name, hint in fields.items():
                record[name] = configio.check(hint, record[name], f"{path}:{number}", name)
            label_types.add(type(record.get("label")))
            records.append(record)
    except (jsonio.JSONFileError, ConfigError) as e:
        raise SuiteError(str(e)) from None
    if not records:
        raise SuiteError(f"{path}: no records")
    if len(label_types) > 1:
        raise SuiteError(f"{path}: labels mix numbers and strings")
    return records


def load_suite_file(path: str) -> Suite:
    try:
        spec = configio.build(_SuiteSpec, jsonio.read_json(path), path)
    except (jsonio.JSONFileError, ConfigError) as e:
        raise SuiteError(str(e)) from None
    root = os.path.dirname(os.path.abspath(path))
    tasks = []
    for t in spec.tasks:
        records = read_jsonl(os.path.join(root, t.data), RECORD_FIELDS[t.type])
        corpus = ()
        if t.corpus:
            rows = read_jsonl(os.path.join(root, t.corpus), {"text": str})
            corpus = tuple(r["text"] for r in rows)
        tasks.append(
            Task(t.name, t.type, tuple(records), t.lang, t.weight, corpus, dict(t.prompts))
        )
    if not tasks:
        raise SuiteError(f"{path}: no tasks")
    return Suite(spec.name or os.path.basename(path), tuple(tasks))


def _sample_suite() -> Suite:
    """The bundled multilingual sample: query -> title retrieval per language and to English,
    and title bitext mining against English."""
    rows = load_sample()
    langs = list(dict.fromkeys(r["lang"] for r in rows))
    english = {r["product"]: r["title"] for r in rows if r["lang"] == "en"}
    titles_of = {lang: [r["title"] for r in rows if r["lang"] == lang] for lang in langs}
    tasks = []
    for lang in langs:
        mine = [r for r in rows if r["lang"] == lang]
        retrieval = tuple({"query": r["query"], "relevant": [r["title"]]} for r in mine)
        tasks.append(Task(f"sample-retrieval-{lang}", "retrieval", retrieval, lang,
                          corpus=tuple(titles_of[lang])))  # fmt: skip
        if lang != "en":
            to_en = tuple({"query": r["query"], "relevant": [english[r["product"]]]} for r in mine)
            tasks.append(Task(f"sample-retrieval-{lang}-en", "retrieval", to_en, lang,
                              corpus=tuple(titles_of["en"])))  # fmt: skip
            bitext = tuple({"source": r["title"], "target": english[r["product"]]} for r in mine)
            tasks.append(Task(f"sample-bitext-{lang}-en", "bitext", bitext, lang))
    return Suite("sample", tuple(tasks))


def _general_suite() -> Suite:
    """General-domain cross-lingual retrieval: each sentence in one language must find its six
    translations among the other languages' sentences, and bitext mining against English.
    Fine-tuning on product text should leave these scores (nearly) intact."""
    rows = load_general()
    langs = list(dict.fromkeys(r["lang"] for r in rows))
    english = {r["sentence"]: r["text"] for r in rows if r["lang"] == "en"}
    tasks = []
    for lang in langs:
        mine = [r for r in rows if r["lang"] == lang]
        others = [r for r in rows if r["lang"] != lang]
        retrieval = tuple(
            {
                "query": r["text"],
                "relevant": [o["text"] for o in others if o["sentence"] == r["sentence"]],
            }
            for r in mine
        )
        tasks.append(Task(f"general-xling-{lang}", "retrieval", retrieval, lang,
                          corpus=tuple(o["text"] for o in others),
                          prompts={"query": "query", "document": "query"}))  # fmt: skip
        if lang != "en":
            bitext = tuple({"source": r["text"], "target": english[r["sentence"]]} for r in mine)
            tasks.append(Task(f"general-bitext-{lang}-en", "bitext", bitext, lang))
    return Suite("general", tuple(tasks))


BUILTIN: dict[str, Callable[[], Suite]] = {"sample": _sample_suite, "general": _general_suite}


def load_suite(name_or_path: str) -> Suite:
    if name_or_path in BUILTIN:
        return BUILTIN[name_or_path]()
    if os.path.isfile(name_or_path):
        return load_suite_file(name_or_path)
    raise SuiteError(
        f"suite {name_or_path!r}: not a file and not a built-in suite ({sorted(BUILTIN)})"
    )

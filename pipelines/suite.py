"""An evaluation suite from a build's held-out split: the e-commerce tasks of the paper, per
language, as a suite file `compass-jax eval --suite` reads.

Task families (each one task per language; a cross-lingual pair counts for its source language):
  search-<lang>       retrieval: query_product (+ synthetic_query) queries -> their product
                      titles, among every title of that language in the split (the positives
                      and their mined hard negatives)
  category-<lang>     classification: product title -> category; the classifier is fitted on
                      the training split's titles of that language, scored on the held-out ones
  clustering-<lang>   clustering: the held-out titles of that language by category
  xling-<lang>        bitext: a title finds the same product's title in another language
Groups were split by product group, so no held-out product (nor its translations) was trained on.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from compass_jax import jsonio
from compass_jax.atomic import atomic_dir
from compass_jax.data.pairs import PairRecord
from compass_jax.data.tfds_source import open_build, read_index

SEARCH_TASKS = ("query_product", "synthetic_query")
SUITE_FILE = "suite.json"


def _records(root: str, split: str, tasks: Iterable[str]) -> list[PairRecord]:
    available = set(read_index(root)["tasks"])
    wanted = [t for t in tasks if t in available]
    if not wanted:
        return []
    return [r for source in open_build(root, split, wanted).values() for r in source]


def _cap(rows: list, limit: int | None, rng: np.random.Generator) -> list:
    if limit is None or len(rows) <= limit:
        return rows
    keep = np.sort(rng.choice(len(rows), limit, replace=False))
    return [rows[i] for i in keep]


def _source_lang(lang: str) -> str:
    return lang.split(">")[0]


def build_tasks(
    root: str | os.PathLike,
    *,
    split: str = "test",
    train_split: str = "train",
    max_per_task: int | None = 400,
    seed: int = 0,
) -> dict[str, tuple[dict, list[dict]]]:
    """`{task name: (suite entry, JSONL records)}`; `max_per_task` caps each task's records
    (a seeded sample), keeping evaluation cheap on large builds."""
    root = os.fspath(root)
    rng = np.random.default_rng(seed)
    held_out = _records(root, split, (*SEARCH_TASKS, "title_category", "cross_lingual"))
    if not held_out:
        raise ValueError(f"{root}: split {split!r} has no search, category or cross-lingual data")
    by_lang: dict[tuple[str, str], list[PairRecord]] = defaultdict(list)
    for r in held_out:
        family = "search" if r.task in SEARCH_TASKS else r.task
        by_lang[(family, _source_lang(r.lang))].append(r)
    category_train = defaultdict(list)
    for r in _records(root, train_split, ("title_category",)):
        category_train[r.lang].append(r)

    tasks: dict[str, tuple[dict, list[dict]]] = {}
    for (family, lang), rows in sorted(by_lang.items()):
        if family == "search":
            rows = _cap(rows, max_per_task, rng)
            titles = list(dict.fromkeys(t for r in rows for t in (r.positive, *r.negatives)))
            tasks[f"search-{lang}"] = (
                {"type": "retrieval", "corpus": f"search-{lang}.corpus.jsonl"},
                [{"query": r.query, "relevant": [r.positive]} for r in rows],
            )
            tasks[f"search-{lang}.corpus"] = (None, [{"text": t} for t in titles])
        elif family == "title_category":
            titles = _cap(list({r.query: r for r in rows}.values()), max_per_task, rng)
            train = _cap(list({r.query: r for r in category_train[lang]}.values()),
                         max_per_task, rng)  # fmt: skip
            if len({r.label for r in titles}) > 1 and len({r.label for r in train}) > 1:
                tasks[f"category-{lang}"] = (
                    {"type": "classification"},
                    [{"text": r.query, "label": r.label, "split": "train"} for r in train]
                    + [{"text": r.query, "label": r.label, "split": "test"} for r in titles],
                )
            if len({r.label for r in titles}) > 1:
                tasks[f"clustering-{lang}"] = (
                    {"type": "clustering"},
                    [{"text": r.query, "label": r.label} for r in titles],
                )
        elif family == "cross_lingual":
            # Bitext mining needs one target per source and distinct targets.
            pairs, targets = {}, set()
            for r in rows:
                if r.query not in pairs and r.positive not in targets:
                    pairs[r.query] = r.positive
                    targets.add(r.positive)
            pairs = _cap(list(pairs.items()), max_per_task, rng)
            if len(pairs) > 1:
                tasks[f"xling-{lang}"] = (
                    {"type": "bitext"},
                    [{"source": s, "target": t} for s, t in pairs],
                )
    return tasks


def write_suite(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    name: str = "ecommerce",
    split: str = "test",
    train_split: str = "train",
    max_per_task: int | None = 400,
    seed: int = 0,
) -> str:
    """Write `out/suite.json` and one JSONL per task (replacing `out` whole); returns the path of
    the suite file."""
    tasks = build_tasks(root, split=split, train_split=train_split,
                        max_per_task=max_per_task, seed=seed)  # fmt: skip
    entries = []
    with atomic_dir(out, overwrite=True) as tmp:
        for task, (entry, records) in tasks.items():
            jsonio.write_jsonl(os.path.join(tmp, f"{task}.jsonl"), records)
            if entry is not None:
                lang = task.rsplit("-", 1)[1]
                prompts = {"query": "query", "document": "document"}
                entries.append({"name": task, "lang": lang, "data": f"{task}.jsonl",
                                "prompts": prompts, **entry})  # fmt: skip
        spec = {"name": name, "source": os.path.abspath(root), "split": split, "tasks": entries}
        jsonio.write_json(os.path.join(tmp, SUITE_FILE), spec)
    return os.path.join(os.fspath(out), SUITE_FILE)

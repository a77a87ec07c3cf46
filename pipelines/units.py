"""The build's units of work as pure functions: inputs in memory, outputs and a report out.

Both runners call exactly these: the in-process runner (`pipelines.build`) with its inputs and
outputs in the build directory's `work/`, the Beam pipeline (`pipelines.beam`) with them in
PCollections. The data never depend on which runner, how many workers, or in what order units
finish: every unit sorts its inputs by a stable key first. A report is a dict of counts that
add up over units (`merge_reports`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from pipelines.catalog.schema import Product, read_catalog
from pipelines.catalog.vocab import load_vocabulary
from pipelines.config import BuildConfig
from pipelines.filters.dedup import exact_key, minhash_params, pair_text, signature
from pipelines.filters.langid import langid_filter
from pipelines.filters.quality import length_filter, script_filter
from pipelines.hashing import partition_of
from pipelines.tasks.construct import Context, construct
from pipelines.tasks.labels import LabelMap
from pipelines.tasks.synthetic import synthesize
from pipelines.tasks.translated import translate


def output_tasks(cfg: BuildConfig) -> list[str]:
    tasks = set(cfg.tasks.enabled)
    if cfg.synthesis is not None:
        tasks.add("synthetic_query")
    if cfg.translation is not None:
        tasks.update({"cross_lingual", "title_description"})
    return sorted(tasks)


def record_stages(cfg: BuildConfig) -> list[str]:
    """The routes that make records: structured construction, synthesis, translation."""
    optional = {"synthesize": cfg.synthesis, "translate": cfg.translation}
    return ["construct", *(s for s, c in optional.items() if c is not None)]


def shard_keys(cfg: BuildConfig) -> list[tuple[str, str]]:
    """Every (task, split) of the output: the unit of mining and of the TFDS datasets."""
    return [(task, split) for task in output_tasks(cfg) for split in sorted(cfg.splits)]


def partition_units(cfg: BuildConfig) -> list[str]:
    return [f"part-{p:05d}" for p in range(cfg.partitions)]


def partition_unit(group_id: str, cfg: BuildConfig) -> str:
    return f"part-{partition_of(group_id, cfg.partitions):05d}"


def merge_reports(into: dict, report: dict) -> dict:
    """Add `report` into `into`: numbers add, nested counts merge, strings keep the first."""
    for k, v in report.items():
        if isinstance(v, bool | str):
            into.setdefault(k, v)
        elif isinstance(v, int | float):
            into[k] = into.get(k, 0) + v
        elif isinstance(v, dict):
            merge_reports(into.setdefault(k, {}), v)
    return into


def reason_counts(rejects: Iterable[dict]) -> dict:
    # By kind of reason: the numbers in "agreement 0.41 < 0.5" would make every key unique.
    return dict(Counter(re.sub(r"\d+(\.\d+)?", "#", r["reason"].split(":")[0]) for r in rejects))


def filter_counts(rejects: Iterable[dict]) -> dict:
    return dict(Counter(r["filter"] for r in rejects))


# catalog -> partitions ------------------------------------------------------------------------
def ingest(cfg: BuildConfig, path: str) -> tuple[list[Product], list[dict], dict]:
    """One catalog file's valid products, its rejected lines, and the report."""
    errors: list[str] | None = [] if cfg.catalog.on_invalid == "reject" else None
    products = list(read_catalog(path, errors))
    rejects = [{"reason": "invalid catalog line", "error": e} for e in errors or ()]
    report = {"file": path, "products": len(products), "dropped": reason_counts(rejects)}
    return products, rejects, report


def label_map(category_keys: Iterable[Sequence[str]]) -> LabelMap:
    return LabelMap.from_paths(tuple(k) for k in category_keys)


def context(cfg: BuildConfig, labels: LabelMap) -> Context:
    return Context(cfg.tasks, load_vocabulary(), labels, cfg.seed, cfg.splits)


def sort_products(products: Iterable[Product]) -> list[Product]:
    return sorted(products, key=lambda p: (p.group_id, p.lang, p.id))


def by_uid(records: Iterable[dict]) -> list[dict]:
    return sorted(records, key=lambda r: r["uid"])


# records of one partition ---------------------------------------------------------------------
def construct_unit(cfg, labels, products) -> tuple[list[dict], dict]:
    records = by_uid(construct(sort_products(products), context(cfg, labels)))
    return records, {"records": len(records), "by_task": dict(Counter(r["task"] for r in records))}


def synthesize_unit(cfg, labels, products, generator) -> tuple[list[dict], list[dict], dict]:
    records, rejects = synthesize(
        sort_products(products), generator, cfg.synthesis, context(cfg, labels)
    )
    report = {
        "records": len(records),
        "generator": dict(generator.stats),
        "dropped": reason_counts(rejects),
    }
    return by_uid(records), rejects, report


def translate_unit(cfg, labels, products, generator, teacher) -> tuple[list, list, dict]:
    records, rejects = translate(
        sort_products(products), generator, cfg.translation, context(cfg, labels), teacher
    )
    report = {
        "records": len(records),
        "generator": dict(generator.stats),
        "dropped": reason_counts(rejects),
    }
    return by_uid(records), rejects, report


def filter_unit(cfg: BuildConfig, records: Iterable[dict]):
    """(kept records, dedup keys, rejects, report) of one partition's records of every route.

    The dedup keys are `(uid, task, exact key, MinHash signature)` per kept record: all that
    the whole-build duplicate search needs, without the texts.
    """
    f = cfg.filters
    records = by_uid(records)
    n_in, rejects = len(records), []
    records, bad = length_filter(
        records,
        min_chars=f.min_chars,
        max_query_chars=f.max_query_chars,
        max_positive_chars=f.max_positive_chars,
    )
    rejects += bad
    if f.script:
        records, bad = script_filter(records, min_share=f.min_script_share)
        rejects += bad
    langid_stats = Counter()
    if f.langid:
        records, bad = langid_filter(
            records,
            langs=f.langid_langs,
            min_chars=f.langid_min_chars,
            min_confidence=f.langid_min_confidence,
            confusable=f.langid_confusable,
            allow_english=f.langid_allow_english,
            stats=langid_stats,
        )
        rejects += bad
    a, b = minhash_params(f.num_perm, cfg.seed + 1)
    keys = [
        (
            r["uid"],
            r["task"],
            exact_key(r) if f.exact_dedup else r["uid"],  # uids are distinct: no exact duplicates
            signature(pair_text(r), a, b) if f.near_dedup else None,
        )
        for r in records
    ]
    report = {
        "in": n_in,
        "kept": len(records),
        "langid": dict(langid_stats),
        "dropped": filter_counts(rejects),
    }
    return records, keys, rejects, report


def dedup_report(n_in: int, drops: dict[str, str]) -> dict:
    kinds = Counter(reason.split(" of ")[0] for reason in drops.values())
    return {"in": n_in, "kept": n_in - len(drops), "dropped": dict(kinds)}


def apply_drops(records: Iterable[dict], drops: dict[str, str]) -> tuple[list[dict], list[dict]]:
    from pipelines.filters import reject

    kept, rejects = [], []
    for r in records:
        if r["uid"] in drops:
            rejects.append(reject(r, "dedup", drops[r["uid"]]))
        else:
            kept.append(r)
    return kept, rejects


def stack_signatures(keys: Sequence[tuple], num_perm: int) -> np.ndarray | None:
    if not keys or keys[0][3] is None:
        return None
    return np.stack([k[3] for k in keys]).astype(np.uint32).reshape(len(keys), num_perm)

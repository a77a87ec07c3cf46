"""The body of each build stage, for one unit of work; each returns its report (counts kept,
dropped per reason, ...), which becomes the unit's done-marker."""

from __future__ import annotations

import functools
import glob
import os
import re
from collections import Counter

import numpy as np

from pipelines import filters, tfds_io
from pipelines.catalog.generate import write_catalog_file
from pipelines.catalog.schema import Product, read_catalog, validate_record
from pipelines.catalog.vocab import load_vocabulary
from pipelines.filters.dedup import exact_key, find_duplicates, minhash_params, pair_text, signature
from pipelines.filters.langid import langid_filter
from pipelines.filters.quality import length_filter, script_filter
from pipelines.generate import make_generator
from pipelines.hashing import partition_of, split_of
from pipelines.mining import MiningConfig, build_corpus, mine, unique_docs
from pipelines.tasks import TASKS
from pipelines.tasks.construct import Context, construct
from pipelines.tasks.labels import LabelMap
from pipelines.tasks.synthetic import synthesize
from pipelines.tasks.translated import translate
from pipelines.teacher import make_teacher
from pipelines.workspace import Workspace, dump_json, dump_jsonl, dump_npz, load_json, load_jsonl

RECORD_STAGES = ("construct", "synthesize", "translate")


def output_tasks(ws: Workspace) -> list[str]:
    cfg = ws.cfg
    tasks = set(cfg.tasks.enabled)
    if cfg.synthesis is not None:
        tasks.add("synthetic_query")
    if cfg.translation is not None:
        tasks.update({"cross_lingual", "title_description"})
    return sorted(tasks)


def _write_rejects(ws: Workspace, stage: str, unit: str, rejects: list[dict]) -> Counter:
    dump_jsonl(ws.rejects(stage, unit), ({"stage": stage, **r} for r in rejects))
    # Count by kind of reason: the numbers in "agreement 0.41 < 0.5" would make every key unique.
    return dict(Counter(re.sub(r"\d+(\.\d+)?", "#", r["reason"].split(":")[0]) for r in rejects))


# catalog ---------------------------------------------------------------------------------
def run_catalog(ws: Workspace, unit: str) -> dict:
    index = int(unit.split("-")[1])
    c = ws.cfg.catalog
    path = ws.catalog_files()[index]
    n = write_catalog_file(path, c.generate_size, ws.cfg.seed, c.generate_files, index, c.langs)
    return {"listings": n}


# ingest ----------------------------------------------------------------------------------
def run_ingest(ws: Workspace, unit: str) -> dict:
    """Validate one input file and route its products to partitions by group_id."""
    path = ws.catalog_files()[int(unit[1:])]
    errors: list[str] | None = [] if ws.cfg.catalog.on_invalid == "reject" else None
    parts: dict[int, list[dict]] = {p: [] for p in range(ws.cfg.partitions)}
    paths = set()
    for product in read_catalog(path, errors):
        parts[partition_of(product.group_id, ws.cfg.partitions)].append(product.to_json())
        paths.add(tuple(product.category_keys))
    for p, rows in parts.items():
        dump_jsonl(ws.work("ingest", f"{unit}/part-{p:05d}.jsonl"), rows)
    dump_json(ws.work("ingest", f"{unit}/categories.json"), sorted(map(list, paths)))
    dropped = {}
    if errors:
        dropped = _write_rejects(
            ws, "ingest", unit, [{"reason": "invalid catalog line", "error": e} for e in errors]
        )
    return {"file": path, "products": sum(map(len, parts.values())), "dropped": dropped}


@functools.lru_cache(maxsize=2)
def label_map(root: str) -> LabelMap:
    paths = []
    for f in sorted(glob.glob(os.path.join(root, "work", "ingest", "*", "categories.json"))):
        paths += [tuple(p) for p in load_json(f)]
    return LabelMap.from_paths(paths)


def partition_products(ws: Workspace, unit: str) -> list[Product]:
    rows = []
    for f in sorted(glob.glob(ws.work("ingest", f"*/{unit}.jsonl"))):
        rows += list(load_jsonl(f))
    products = [validate_record(r, "ingested") for r in rows]
    return sorted(products, key=lambda p: (p.group_id, p.lang, p.id))


def _context(ws: Workspace) -> Context:
    return Context(ws.cfg.tasks, load_vocabulary(), label_map(ws.root), ws.cfg.seed, ws.cfg.splits)


# construct / synthesize / translate --------------------------------------------------------
def run_construct(ws: Workspace, unit: str) -> dict:
    records = sorted(construct(partition_products(ws, unit), _context(ws)), key=lambda r: r["uid"])
    dump_jsonl(ws.work("construct", f"{unit}.jsonl"), records)
    return {"records": len(records), "by_task": Counter(r["task"] for r in records)}


def _generator(ws: Workspace, unit: str):
    return make_generator(ws.cfg.generator, ws.path("cache", f"generate-{unit}.sqlite"))


def run_synthesize(ws: Workspace, unit: str) -> dict:
    ctx = _context(ws)
    generator = _generator(ws, unit)
    try:
        records, rejects = synthesize(
            partition_products(ws, unit), generator, ws.cfg.synthesis, ctx.split, ws.cfg.seed
        )
        hits = generator.cache.hits
    finally:
        generator.close()
    dump_jsonl(ws.work("synthesize", f"{unit}.jsonl"), sorted(records, key=lambda r: r["uid"]))
    return {
        "records": len(records),
        "cache_hits": hits,
        "dropped": _write_rejects(ws, "synthesize", unit, rejects),
    }


@functools.lru_cache(maxsize=1)
def _teacher(name: str, batch_size: int, max_length: int, dtype: str):
    return make_teacher(name, batch_size=batch_size, max_length=max_length, dtype=dtype)


def teacher(ws: Workspace):
    m = ws.cfg.mining or MiningConfig()  # translation's embedding filter needs one too
    return _teacher(m.teacher, m.batch_size, m.max_length, m.dtype)


def run_translate(ws: Workspace, unit: str) -> dict:
    ctx = _context(ws)
    generator = _generator(ws, unit)
    needs_teacher = ws.cfg.translation.filter == "embedding"
    try:
        records, rejects = translate(
            partition_products(ws, unit),
            generator,
            ws.cfg.translation,
            ctx.split,
            ws.cfg.seed,
            teacher(ws) if needs_teacher else None,
        )
    finally:
        generator.close()
    dump_jsonl(ws.work("translate", f"{unit}.jsonl"), sorted(records, key=lambda r: r["uid"]))
    return {"records": len(records), "dropped": _write_rejects(ws, "translate", unit, rejects)}


# filter ----------------------------------------------------------------------------------
def run_filter(ws: Workspace, unit: str) -> dict:
    f = ws.cfg.filters
    records = []
    for stage in RECORD_STAGES:
        path = ws.work(stage, f"{unit}.jsonl")
        if os.path.exists(path):
            records += list(load_jsonl(path))
    records.sort(key=lambda r: r["uid"])
    n_in = len(records)
    rejects: list[dict] = []
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
    dump_jsonl(ws.work("filter", f"{unit}.jsonl"), records)
    a, b = minhash_params(f.num_perm, ws.cfg.seed + 1)
    sigs = (
        np.stack([signature(pair_text(r), a, b) for r in records])
        if records and f.near_dedup
        else np.zeros((len(records), f.num_perm), np.uint32)
    )
    dump_npz(
        ws.work("filter", f"{unit}.sig.npz"),
        uid=np.array([r["uid"] for r in records]),
        task=np.array([r["task"] for r in records]),
        exact=np.array([exact_key(r) for r in records]),
        sig=sigs,
    )
    return {
        "in": n_in,
        "kept": len(records),
        "langid": langid_stats,
        "dropped": _by_filter(ws, "filter", unit, rejects),
    }


def _by_filter(ws, stage, unit, rejects) -> dict:
    dump_jsonl(ws.rejects(stage, unit), ({"stage": stage, **r} for r in rejects))
    return dict(Counter(r["filter"] for r in rejects))


# dedup (whole build) -----------------------------------------------------------------------
def run_dedup(ws: Workspace, unit: str) -> dict:
    uids, tasks, exact, sigs = [], [], [], []
    for part in ws.partition_units():
        with np.load(ws.work("filter", f"{part}.sig.npz")) as z:
            uids += z["uid"].tolist()
            tasks += z["task"].tolist()
            exact += z["exact"].tolist()
            sigs.append(z["sig"])
    f = ws.cfg.filters
    if not f.exact_dedup:
        exact = uids  # every key distinct: no exact duplicates
    matrix = np.concatenate(sigs) if sigs and f.near_dedup else None
    drops = find_duplicates(
        uids, tasks, exact, matrix, bands=f.bands, threshold=f.near_dedup_threshold
    )
    dump_json(ws.work("dedup", "drops.json"), drops)
    kinds = Counter(reason.split(" of ")[0] for reason in drops.values())
    return {"in": len(uids), "kept": len(uids) - len(drops), "dropped": kinds}


@functools.lru_cache(maxsize=2)
def _drops(root: str) -> dict:
    return load_json(os.path.join(root, "work", "dedup", "drops.json"))


def deduplicated(ws: Workspace, unit: str) -> list[dict]:
    drops = _drops(ws.root)
    kept, rejects = [], []
    for r in load_jsonl(ws.work("filter", f"{unit}.jsonl")):
        if r["uid"] in drops:
            rejects.append(filters.reject(r, "dedup", drops[r["uid"]]))
        else:
            kept.append(r)
    return kept, rejects


# embed / mine ----------------------------------------------------------------------------
def run_embed(ws: Workspace, unit: str) -> dict:
    records, rejects = deduplicated(ws, unit)
    _by_filter(ws, "dedup", unit, rejects)
    docs = unique_docs(records)
    t = teacher(ws)
    doc_vec = t.encode([d["text"] for d in docs], prompt="document").astype(np.float16)
    query_vec = t.encode([r["query"] for r in records], prompt="query").astype(np.float16)
    dump_npz(
        ws.work("embed", f"{unit}.npz"),
        doc_task=np.array([d["task"] for d in docs], dtype=str),
        doc_split=np.array([d["split"] for d in docs], dtype=str),
        doc_text=np.array([d["text"] for d in docs], dtype=str),
        doc_label=np.array([d["label"] for d in docs], np.int64),
        doc_group=np.array([d["group_id"] for d in docs], dtype=str),
        doc_vec=doc_vec,
        query_uid=np.array([r["uid"] for r in records], dtype=str),
        query_vec=query_vec,
    )
    return {"records": len(records), "documents": len(docs), "teacher": t.name}


@functools.lru_cache(maxsize=1)
def _corpus(root: str, units: tuple[str, ...]):
    docs, vecs, seen = [], [], set()
    for part in units:
        with np.load(os.path.join(root, "work", "embed", f"{part}.npz")) as z:
            z = {k: z[k] for k in z.files}  # an NpzFile re-reads the array on every access
        for i in range(len(z["doc_text"])):
            d = {
                "task": str(z["doc_task"][i]),
                "split": str(z["doc_split"][i]),
                "text": str(z["doc_text"][i]),
                "label": int(z["doc_label"][i]),
                "group_id": str(z["doc_group"][i]),
            }
            key = (d["task"], d["split"], d["text"])
            if key not in seen:  # a document shared by partitions: the first describes it
                seen.add(key)
                docs.append(d)
                vecs.append(z["doc_vec"][i])
    return build_corpus(docs, np.asarray(vecs, np.float32))


def run_mine(ws: Workspace, unit: str) -> dict:
    records, _ = deduplicated(ws, unit)
    stats = Counter()
    if ws.cfg.mining is not None and records:
        with np.load(ws.work("embed", f"{unit}.npz")) as z:
            query_vec = z["query_vec"].astype(np.float32)
        records = mine(
            records, query_vec, _corpus(ws.root, tuple(ws.partition_units())), ws.cfg.mining, stats
        )
    dump_jsonl(ws.work("mine", f"{unit}.jsonl"), records)
    return {"records": len(records), "mining": stats}


# write / finalize --------------------------------------------------------------------------
def run_write(ws: Workspace, unit: str) -> dict:
    index, count = int(unit.split("-")[1]), ws.cfg.partitions
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in load_jsonl(ws.work("mine", f"{unit}.jsonl")):
        groups.setdefault((r["task"], r["split"]), []).append(r)
    spec = tfds_io.features()
    shards: dict[str, dict[str, int]] = {}
    for task in output_tasks(ws):
        for split in sorted(ws.cfg.splits):
            rows = groups.get((task, split), [])
            path = tfds_io.shard_path(ws.tfds_root, task, ws.cfg.version, split, index, count)
            shards.setdefault(task, {})[split] = tfds_io.write_shard(path, rows, spec)
    return {"shards": shards}


def shard_lengths(ws: Workspace) -> dict[str, dict[str, list[int]]]:
    out: dict[str, dict[str, list[int]]] = {}
    for unit in ws.partition_units():
        for task, splits in ws.report("write", unit)["shards"].items():
            for split, n in splits.items():
                out.setdefault(task, {}).setdefault(split, []).append(n)
    return out


def task_description(task: str) -> str:
    return f"compass-jax {task}: {TASKS[task].instruction}."


def split_check(ws: Workspace) -> None:
    """Every group_id in exactly one split (the build's own guarantee, checked on its output)."""
    owner: dict[str, str] = {}
    for unit in ws.partition_units():
        for r in load_jsonl(ws.work("mine", f"{unit}.jsonl")):
            if owner.setdefault(r["group_id"], r["split"]) != r["split"]:
                raise AssertionError(f"group {r['group_id']} is in two splits")
            if split_of(r["group_id"], ws.cfg.seed, ws.cfg.splits) != r["split"]:
                raise AssertionError(f"record {r['uid']} is in the wrong split")

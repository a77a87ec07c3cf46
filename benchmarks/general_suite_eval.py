"""What evaluating one model on the general-domain suite costs, and what the model scores.

Evaluates `--model` on the suite from package translations (`pipelines.general_suite`, built or
taken from the cache) and, as the peer in the same run, on the built-in 16-sentence `general`
suite it replaces, each with a fresh embedding cache (so every text is embedded, as for a newly
trained model). Reports wall and CPU seconds, texts embedded and texts/s for both, the
contention from other processes meanwhile, and the model's per-language scores.

    python benchmarks/general_suite_eval.py --max-load 0.5 --out /tmp/general_suite_eval.json
"""

from __future__ import annotations

import argparse
import tempfile

from _machine import (
    Timer,
    add_quiet_arguments,
    contention_since,
    cpu_snapshot,
    emit,
    logger,
    machine_info,
    wait_for_quiet,
)

from compass_jax.encoder import Encoder
from compass_jax.eval import evaluate, load_suite
from compass_jax.resolve import DEFAULT_MODEL
from pipelines.general_suite import general_suite


def _texts(suite) -> int:
    fields = {"retrieval": ("query",), "bitext": ("source", "target")}
    texts = set()
    for task in suite.tasks:
        texts.update(task.corpus)
        for record in task.records:
            texts.update(record[f] for f in fields.get(task.type, ()))
            texts.update(record.get("relevant", ()))
    return len(texts)


def _timed(encoder, suite) -> tuple[dict, dict]:
    with tempfile.TemporaryDirectory() as cache, Timer() as t:
        results = evaluate(encoder, suite, cache_dir=cache, progress=False)
    texts = _texts(suite)
    timing = {"wall_s": round(t.wall, 1), "cpu_s": round(t.cpu, 1), "texts": texts,
              "texts_per_s": round(texts / t.wall, 1)}  # fmt: skip
    return timing, results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--suite", default=None, help="suite file (default: the cached build)")
    add_quiet_arguments(p)
    args = p.parse_args()
    log = logger("general_suite_eval")
    quiet = wait_for_quiet(args.max_load, args.max_wait_s, log)
    suite = load_suite(args.suite or general_suite(progress=True))
    encoder = Encoder.load(args.model)
    start = cpu_snapshot()
    log("peer: the built-in general suite")
    peer, _ = _timed(encoder, load_suite("general"))
    log(f"{suite.name}: {len(suite.tasks)} tasks")
    ours, results = _timed(encoder, suite)
    emit({
        "benchmark": "general_suite_eval",
        "model": args.model,
        "suite": suite.name,
        "eval": ours,
        "peer_builtin_general": peer,
        "wall_ratio_vs_peer": round(ours["wall_s"] / max(peer["wall_s"], 1e-9), 1),
        "average": round(results["average"], 4),
        "by_language": results["by_language"],
        "contention": contention_since(start),
        "quiet": quiet,
        "machine": machine_info(),
    }, args.out)  # fmt: skip


if __name__ == "__main__":
    main()

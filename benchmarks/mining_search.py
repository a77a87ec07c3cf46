"""Mining search: queries/s of exact top-k (the blocked matmul) against the faiss IVF index that
`pipelines.ann` builds, at 10^5 and 10^6 corpus rows, with the IVF's recall@10 against exact
search; optionally the other ANN libraries considered (usearch HNSW, faiss HNSW).

Vectors are random, L2-normalised, d=384 (multilingual-e5-small's width): `clustered` draws them
around 2,000 centres (embeddings of a catalog cluster by product type), `uniform` is the worst
case for any index (no structure, every neighbour about as far as any other). Prints one JSON
object with the machine and the CPU share other processes took. Never gates CI.

  python benchmarks/mining_search.py --rows 100000 1000000 --queries 1000
  python benchmarks/mining_search.py --rows 100000 --libraries   # + usearch / faiss HNSW
"""

from __future__ import annotations

import argparse

import _machine
import numpy as np

from pipelines import ann


def vectors(n: int, d: int, kind: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "clustered":
        centres = np.random.default_rng(99).standard_normal((2000, d), dtype=np.float32)
        x = centres[rng.integers(0, len(centres), n)]
        x += 0.8 * rng.standard_normal((n, d), dtype=np.float32)
    else:
        x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def timed(fn):
    with _machine.Timer() as t:
        out = fn()
    return out, t


def one_size(n: int, m: int, d: int, k: int, kind: str, target: float, log) -> dict:
    corpus, queries = vectors(n, d, kind, 1), vectors(m, d, kind, 2)
    log(f"{kind} {n} rows: exact")
    (exact, _), te = timed(lambda: ann.exact_topk(corpus, queries, k))
    log(f"{kind} {n} rows: ivf build")
    index, tb = timed(lambda: ann.IVFIndex(corpus))
    sample = queries[:: max(1, m // 256)]
    recall_sample, tc = timed(lambda: index.calibrate(corpus, sample, target))
    log(f"{kind} {n} rows: ivf search at nprobe {index.nprobe}")
    (ids, _), ts = timed(lambda: index.search(queries, k))
    return {
        "rows": n,
        "queries": m,
        "exact": {"queries_per_s": round(m / te.wall, 1), "cpu_s": round(te.cpu, 2)},
        "ivf": {
            "nlist": index.nlist,
            "nprobe": index.nprobe,
            "build_s": round(tb.wall, 2),
            "calibrate_s": round(tc.wall, 2),
            "queries_per_s": round(m / ts.wall, 1),
            "recall_at_10_calibration_sample": round(recall_sample, 4),
            "recall_at_10_all_queries": round(ann.recall_at(ids, exact), 4),
        },
        "ivf_over_exact_speedup": round(te.wall / ts.wall, 2),
    }


def libraries(n: int, m: int, d: int, kind: str, log) -> dict:
    """Build time, queries/s and recall@10 of the ANN libraries considered, on one corpus."""
    corpus, queries = vectors(n, d, kind, 1), vectors(m, d, kind, 2)
    exact, _ = ann.exact_topk(corpus, queries, 10)
    out = {}

    def record(name, build, search):
        log(f"libraries: {name}")
        index, tb = timed(build)
        ids, ts = timed(lambda: search(index))
        out[name] = {
            "build_s": round(tb.wall, 2),
            "queries_per_s": round(m / ts.wall, 1),
            "recall_at_10": round(ann.recall_at(np.asarray(ids, np.int64), exact), 4),
        }

    def ivf():
        index = ann.IVFIndex(corpus)
        index.calibrate(corpus, queries[::4], 0.95)
        return index

    record("faiss_ivf_flat", ivf, lambda ix: ix.search(queries, 10)[0])
    try:
        import faiss

        def hnsw():
            h = faiss.IndexHNSWFlat(d, 16, faiss.METRIC_INNER_PRODUCT)
            h.hnsw.efConstruction, h.hnsw.efSearch = 128, 64
            h.add(corpus)
            return h

        record("faiss_hnsw", hnsw, lambda h: h.search(queries, 10)[1])
    except ImportError:
        out["faiss_hnsw"] = "not installed"
    try:
        from usearch.index import Index

        def usearch():
            u = Index(ndim=d, metric="ip", dtype="f32", connectivity=16, expansion_add=128,
                      expansion_search=64)  # fmt: skip
            u.add(np.arange(n), corpus)
            return u

        record("usearch_hnsw", usearch, lambda u: u.search(queries, 10).keys)
    except ImportError:
        out["usearch_hnsw"] = "not installed"
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--k", type=int, default=100, help="neighbours per query (mining's top_k)")
    p.add_argument("--kinds", nargs="+", default=["clustered", "uniform"])
    p.add_argument("--recall-target", type=float, default=0.95)
    p.add_argument("--libraries", action="store_true", help="also compare the ANN libraries")
    _machine.add_quiet_arguments(p)
    args = p.parse_args()
    log = _machine.logger("mining_search")
    _machine.wait_for_quiet(args.max_load, args.max_wait_s, log)
    start = _machine.cpu_snapshot()
    report = {"machine": _machine.machine_info(with_torch=False), "dim": args.dim, "k": args.k}
    for kind in args.kinds:
        report[kind] = [
            one_size(n, args.queries, args.dim, args.k, kind, args.recall_target, log)
            for n in args.rows
        ]
    if args.libraries:
        report["libraries"] = libraries(min(args.rows), args.queries, args.dim, "clustered", log)
    report["contention"] = _machine.contention_since(start)
    _machine.emit(report, args.out)


if __name__ == "__main__":
    main()

"""`compass-jax demo`: the end-to-end run on the embedded default, offline.

For now: embed the bundled multilingual e-commerce sample (shopper queries and product titles
in seven languages) with the default model, and report query -> product retrieval within each
language and across languages (query in any language, titles in English).
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from compass_jax.assets import load_sample
from compass_jax.atomic import atomic_path
from compass_jax.encoder import Encoder
from compass_jax.resolve import DEFAULT_MODEL

HELP = "run the end-to-end demo on the bundled sample with the default model"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help="HF directory or bundled model name")
    p.add_argument("--out", default="out/demo", help="directory for results (JSON)")
    p.add_argument("--show-lang", default="id", help="language whose full matrix is printed")


def retrieval_summary(q: np.ndarray, d: np.ndarray) -> dict:
    """Row i of `q` should retrieve row i of `d`."""
    sim = q @ d.T
    positives = np.diag(sim)
    negatives = sim[~np.eye(len(sim), dtype=bool)].reshape(len(sim), -1)
    return {
        "top1": float(np.mean(sim.argmax(1) == np.arange(len(sim)))),
        "positive_cosine": float(positives.mean()),
        "hardest_negative_cosine": float(negatives.max(1).mean()),
        "margin": float((positives - negatives.max(1)).mean()),
    }


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def run(args: argparse.Namespace) -> dict:
    records = load_sample()
    encoder = Encoder.load(args.model)
    queries = encoder.encode([r["query"] for r in records], prompt="query", progress=True)
    titles = encoder.encode([r["title"] for r in records], prompt="document", progress=True)
    langs = list(dict.fromkeys(r["lang"] for r in records))
    rows_of = {lang: [i for i, r in enumerate(records) if r["lang"] == lang] for lang in langs}
    english = rows_of["en"]
    results = {"model": encoder.path, "n_products": len(english), "languages": {}}
    for lang in langs:
        rows = rows_of[lang]
        results["languages"][lang] = {
            "monolingual": retrieval_summary(queries[rows], titles[rows]),
            "to_english": retrieval_summary(queries[rows], titles[english]),
        }

    shown = rows_of.get(args.show_lang, english)
    sim = queries[shown] @ titles[shown].T
    names = [records[i]["product"] for i in shown]
    print(f"\nQuery -> title cosine similarity ({args.show_lang}; best per row marked *)")
    print(
        _table(
            ["query", *names],
            [
                [records[i]["query"][:40]]
                + [f"{v:.3f}{'*' if j == row.argmax() else ' '}" for j, v in enumerate(row)]
                for i, row in zip(shown, sim, strict=True)
            ],
        )
    )
    print(f"\nRetrieval over {len(english)} products per language (top-1 accuracy, cosine margin)")
    print(
        _table(
            ["lang", "top1", "pos cos", "margin", "top1 ->en", "margin ->en"],
            [
                [
                    lang,
                    f"{m['monolingual']['top1']:.2f}",
                    f"{m['monolingual']['positive_cosine']:.3f}",
                    f"{m['monolingual']['margin']:.3f}",
                    f"{m['to_english']['top1']:.2f}",
                    f"{m['to_english']['margin']:.3f}",
                ]
                for lang, m in results["languages"].items()
            ],
        )
    )
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "similarity.json")
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    print(f"\nresults: {path}")
    return results

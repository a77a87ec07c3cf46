"""Context-grounded synthetic queries: a generator writes shopper queries for a product from
its own listing (title, category, attributes, description), task `synthetic_query`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from pipelines.catalog.schema import Product
from pipelines.generate import Generator, Request
from pipelines.generate.prompts import queries_messages, queries_schema
from pipelines.hashing import stable_int, unit_interval
from pipelines.tasks import record


@dataclasses.dataclass(frozen=True)
class SynthesisConfig:
    fraction: float = 0.25  # share of products that get synthetic queries
    queries_per_product: int = 2
    batch_size: int = 64  # requests handed to the generator at once


def synthesis_requests(products: Sequence[Product], cfg: SynthesisConfig, seed: int):
    chosen = [p for p in products if unit_interval("synthesis", seed, p.id) < cfg.fraction]
    n = cfg.queries_per_product
    requests = [
        Request(
            queries_messages(p, n),
            queries_schema(n),
            {"kind": "queries", "product": p.to_json(), "n": n},
            seed=stable_int(seed, "synthesis", p.id) % 2**31,
        )
        for p in chosen
    ]
    return chosen, requests


def synthesize(
    products: Sequence[Product],
    generator: Generator,
    cfg: SynthesisConfig,
    ctx,
    progress=None,
) -> tuple[list[dict], list[dict]]:
    """(records, rejects) for one partition; `ctx` (a `tasks.construct.Context`) gives the
    seed, each product's split and class."""
    chosen, requests = synthesis_requests(products, cfg, ctx.seed)
    records, rejects = [], []
    for start in range(0, len(requests), cfg.batch_size):
        batch = requests[start : start + cfg.batch_size]
        for p, result in zip(
            chosen[start : start + len(batch)], generator.generate(batch), strict=True
        ):
            if result.value is None:
                rejects.append({"reason": f"generation failed: {result.error}", "id": p.id})
                continue
            seen = set()
            for k, query in enumerate(result.value["queries"]):
                key = " ".join(query.casefold().split())
                if key in seen:
                    continue
                seen.add(key)
                records.append(
                    record(
                        "synthetic_query",
                        f"synthetic_query/{p.id}/{k}",
                        p.lang,
                        query.strip(),
                        p.title,
                        group_id=p.group_id,
                        split=ctx.split(p),
                        source=f"synthetic:{generator.name}",
                        positive_label=ctx.category(p),
                        doc_id=p.id,
                    )
                )
        if progress is not None:
            progress.update(len(batch))
    return records, rejects

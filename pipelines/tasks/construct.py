"""Structured construction: catalog products of one partition -> task records.

A partition holds whole product groups (all languages of a product), so cross-lingual pairs
are complete. Each record's random choices come from a stream keyed by its product and task,
so records do not change when other products are added or the partitions are cut differently.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator, Sequence

from pipelines.catalog.schema import Product
from pipelines.catalog.vocab import Vocabulary
from pipelines.hashing import rng_for, split_of, stable_int
from pipelines.tasks import record
from pipelines.tasks.labels import LabelMap
from pipelines.tasks.queries import make_query


@dataclasses.dataclass(frozen=True)
class TasksConfig:
    enabled: tuple[str, ...] = (
        "query_product",
        "title_category",
        "cross_lingual",
        "title_description",
        "clustering",
    )
    queries_per_product: int = 2
    typo_rate: float = 0.25
    category_level: int = -1  # class ids (and category text) at this path level; -1 = leaf
    category_separator: str = " > "


def _query_product(p: Product, ctx) -> Iterator[dict]:
    rng = rng_for(ctx.seed, "query_product", p.id)
    seen = set()
    for k in range(ctx.cfg.queries_per_product):
        query = make_query(p, ctx.vocab, rng, typo_rate=ctx.cfg.typo_rate)
        if query in seen:
            continue
        seen.add(query)
        yield record(
            "query_product",
            f"query_product/{p.id}/{k}",
            p.lang,
            query,
            p.title,
            group_id=p.group_id,
            split=ctx.split(p),
            positive_label=ctx.category(p),
            doc_id=p.id,
        )


def _title_category(p: Product, ctx) -> Iterator[dict]:
    level = ctx.cfg.category_level
    names = p.category_path if level == -1 else p.category_path[: level + 1]
    yield record(
        "title_category",
        f"title_category/{p.id}",
        p.lang,
        p.title,
        ctx.cfg.category_separator.join(names),
        group_id=p.group_id,
        split=ctx.split(p),
        label=ctx.category(p),
        label_path=ctx.labels.path_ids(p.category_keys),
        positive_label=ctx.category(p),
        doc_id=p.id,
    )


def _title_description(p: Product, ctx) -> Iterator[dict]:
    yield record(
        "title_description",
        f"title_description/{p.id}",
        p.lang,
        p.title,
        p.description,
        group_id=p.group_id,
        split=ctx.split(p),
        positive_label=ctx.category(p),
        doc_id=p.id,
    )


def _cross_lingual(products: Sequence[Product], ctx) -> Iterator[dict]:
    by_group: dict[str, list[Product]] = {}
    for p in products:
        by_group.setdefault(p.group_id, []).append(p)
    for group_id in sorted(by_group):
        members = sorted(by_group[group_id], key=lambda p: (p.lang, p.id))
        for a, b in itertools.combinations(members, 2):
            if a.lang == b.lang:
                continue
            if stable_int(ctx.seed, "direction", a.id, b.id) % 2:
                a, b = b, a
            yield record(
                "cross_lingual",
                f"cross_lingual/{a.id}/{b.id}",
                f"{a.lang}>{b.lang}",
                a.title,
                b.title,
                group_id=group_id,
                split=ctx.split(a),
                positive_label=ctx.category(b),
                doc_id=b.id,
            )


def _clustering(products: Sequence[Product], ctx) -> Iterator[dict]:
    """Pairs of different products of one category (at `category_level`, like
    `title_category`'s classes) and split, in any two languages: a partition rarely holds two
    products of one leaf in one language, and a category is one cluster whatever the language."""
    buckets: dict[tuple, list[Product]] = {}
    for p in products:
        buckets.setdefault((ctx.split(p), ctx.category(p)), []).append(p)
    for key in sorted(buckets):
        members = sorted(buckets[key], key=lambda p: stable_int(ctx.seed, "cluster", p.id))
        for a, b in zip(members[0::2], members[1::2], strict=False):
            if a.group_id == b.group_id:
                continue
            lang = a.lang if a.lang == b.lang else f"{a.lang}>{b.lang}"
            yield record(
                "clustering",
                f"clustering/{a.id}/{b.id}",
                lang,
                a.title,
                b.title,
                group_id=a.group_id,
                split=key[0],
                label=key[1],
                label_path=ctx.labels.path_ids(a.category_keys),
                positive_label=key[1],
                doc_id=b.id,
            )


@dataclasses.dataclass(frozen=True)
class Context:
    cfg: TasksConfig
    vocab: Vocabulary
    labels: LabelMap
    seed: int
    fractions: dict

    def split(self, p: Product) -> str:
        return split_of(p.group_id, self.seed, self.fractions)

    def category(self, p: Product) -> int:
        """The product's class id at `category_level`."""
        return self.labels.label(p.category_keys, self.cfg.category_level)


PER_PRODUCT = {
    "query_product": _query_product,
    "title_category": _title_category,
    "title_description": _title_description,
}
PER_PARTITION = {"cross_lingual": _cross_lingual, "clustering": _clustering}


def construct(products: Sequence[Product], ctx: Context) -> Iterator[dict]:
    """Every enabled task's records for one partition, in a deterministic order."""
    unknown = sorted(set(ctx.cfg.enabled) - set(PER_PRODUCT) - set(PER_PARTITION))
    if unknown:
        raise ValueError(f"unknown structured tasks {unknown}")
    for p in products:
        for name in ctx.cfg.enabled:
            if name in PER_PRODUCT:
                yield from PER_PRODUCT[name](p, ctx)
    for name in ctx.cfg.enabled:
        if name in PER_PARTITION:
            yield from PER_PARTITION[name](products, ctx)

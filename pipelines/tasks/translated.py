"""Cross-lingual translation: a generator writes a product's listing in a language its group
does not have yet; the translation is kept only when it agrees with the source, by
back-translation (character n-gram F-score of the round trip) or by the teacher embedder
(cosine of source and translated title). Kept translations give `cross_lingual` pairs
(source title -> translated title) and target-language `title_description` pairs."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence

import numpy as np

from pipelines.catalog.schema import Product
from pipelines.generate import Generator, Request
from pipelines.generate.prompts import (
    BACK_TRANSLATION_SCHEMA,
    TRANSLATION_SCHEMA,
    back_translation_messages,
    translation_messages,
)
from pipelines.hashing import rng_for, stable_int, unit_interval
from pipelines.tasks import record

LANGS = ("en", "id", "ms", "th", "vi", "tl", "pt")


@dataclasses.dataclass(frozen=True)
class TranslationConfig:
    fraction: float = 0.15  # share of products translated (into one missing language each)
    target_langs: tuple[str, ...] = LANGS
    filter: str = "back_translation"  # back_translation | embedding | none
    min_agreement: float = 0.5  # F-score (back_translation) or cosine (embedding)
    batch_size: int = 64


def char_fscore(a: str, b: str, n: int = 3) -> float:
    """chrF-style F1 of character n-grams (spaces removed, case folded)."""

    def grams(text):
        text = "".join(text.casefold().split())
        return Counter(text[i : i + n] for i in range(max(1, len(text) - n + 1)))

    ga, gb = grams(a), grams(b)
    overlap = sum((ga & gb).values())
    if not overlap:
        return 0.0
    precision, recall = overlap / sum(gb.values()), overlap / sum(ga.values())
    return 2 * precision * recall / (precision + recall)


def _targets(products: Sequence[Product], cfg: TranslationConfig, seed: int):
    present: dict[str, set[str]] = {}
    for p in products:
        present.setdefault(p.group_id, set()).add(p.lang)
    jobs = []
    for p in products:
        if unit_interval("translation", seed, p.id) >= cfg.fraction:
            continue
        options = sorted(set(cfg.target_langs) - present[p.group_id])
        if options:
            target = options[int(rng_for(seed, "translation-target", p.id).integers(len(options)))]
            jobs.append((p, target))
    return jobs


def _batched(generator: Generator, requests: list[Request], size: int, progress=None):
    results = []
    for start in range(0, len(requests), size):
        results += generator.generate(requests[start : start + size])
        if progress is not None:
            progress.update(len(requests[start : start + size]))
    return results


def translate(
    products: Sequence[Product],
    generator: Generator,
    cfg: TranslationConfig,
    ctx,
    teacher=None,
    progress=None,
) -> tuple[list[dict], list[dict]]:
    """(records, rejects) for one partition; `ctx` (a `tasks.construct.Context`) gives the
    seed, each product's split and class."""
    seed = ctx.seed
    jobs = _targets(products, cfg, seed)
    requests = [
        Request(
            translation_messages(p, target),
            TRANSLATION_SCHEMA,
            {
                "kind": "translate",
                "source": p.lang,
                "target": target,
                "title": p.title,
                "description": p.description,
            },
            seed=stable_int(seed, "translate", p.id) % 2**31,
        )
        for p, target in jobs
    ]
    results = _batched(generator, requests, cfg.batch_size, progress)
    rejects, kept = [], []
    for (p, target), result in zip(jobs, results, strict=True):
        if result.value is None:
            rejects.append({"reason": f"translation failed: {result.error}", "id": p.id})
        else:
            kept.append((p, target, result.value))
    scores = _agreement(kept, generator, cfg, seed, teacher)
    records = []
    for (p, target, value), score in zip(kept, scores, strict=True):
        if score < cfg.min_agreement:
            rejects.append(
                {
                    "reason": f"{cfg.filter} agreement {score:.2f} < {cfg.min_agreement}",
                    "id": p.id,
                    "target": target,
                    "title": value["title"],
                }
            )
            continue
        source = f"translation:{generator.name}"
        records.append(
            record(
                "cross_lingual",
                f"cross_lingual/{p.id}/translated-{target}",
                f"{p.lang}>{target}",
                p.title,
                value["title"],
                group_id=p.group_id,
                split=ctx.split(p),
                source=source,
                positive_label=ctx.category(p),
                doc_id=f"{p.id}>{target}",
            )
        )
        records.append(
            record(
                "title_description",
                f"title_description/{p.id}/translated-{target}",
                target,
                value["title"],
                value["description"],
                group_id=p.group_id,
                split=ctx.split(p),
                source=source,
                positive_label=ctx.category(p),
                doc_id=f"{p.id}>{target}",
            )
        )
    return records, rejects


def _agreement(kept, generator, cfg, seed, teacher) -> list[float]:
    if not kept or cfg.filter == "none":
        return [1.0] * len(kept)
    if cfg.filter == "embedding":
        if teacher is None:
            raise ValueError("translation.filter=embedding needs a teacher (mining.teacher)")
        a = teacher.encode([p.title for p, _, _ in kept], prompt="document")
        b = teacher.encode([v["title"] for _, _, v in kept], prompt="document")
        return [float(x) for x in np.sum(a * b, axis=1)]
    if cfg.filter != "back_translation":
        raise ValueError(
            f"translation.filter {cfg.filter!r}: expected back_translation, embedding or none"
        )
    requests = [
        Request(
            back_translation_messages(v["title"], target, p.lang),
            BACK_TRANSLATION_SCHEMA,
            {"kind": "back_translate", "source": target, "target": p.lang, "title": v["title"]},
            seed=stable_int(seed, "back-translate", p.id) % 2**31,
        )
        for p, target, v in kept
    ]
    results = _batched(generator, requests, cfg.batch_size)
    return [
        char_fscore(p.title, r.value["title"]) if r.value else 0.0
        for (p, _, _), r in zip(kept, results, strict=True)
    ]

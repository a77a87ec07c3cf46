"""The `template` backend: answers from the request's structured context, with no model.

Deterministic and offline; the default run and the tests use it. Queries come from the
per-language synthesis templates (needs, gifts, uses) grounded in the product's attributes;
translations from the vocabularies' phrase table.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from pipelines.catalog.schema import validate_record
from pipelines.catalog.vocab import load_vocabulary
from pipelines.generate.base import Generator, Request
from pipelines.generate.lexicon import translate_text
from pipelines.hashing import rng_for
from pipelines.tasks.queries import make_query


class TemplateGenerator(Generator):
    name = "template"

    def answer(self, context: dict, seed: int) -> dict:
        vocab = load_vocabulary()
        kind = context["kind"]
        if kind == "queries":
            product = validate_record(context["product"], "request context")
            rng = rng_for(seed, "template-queries", product.id)
            queries = []
            for _ in range(3 * context["n"]):
                q = make_query(product, vocab, rng, typo_rate=0.15, style="synthesis")
                if q not in queries:
                    queries.append(q)
                if len(queries) == context["n"]:
                    break
            return {"queries": queries}
        if kind in ("translate", "back_translate"):
            source, target = context["source"], context["target"]
            if source not in vocab.langs or target not in vocab.langs:
                return {}  # fails the schema: no vocabulary for this pair
            out = {"title": translate_text(vocab, context["title"], source, target)}
            if kind == "translate":
                out["description"] = translate_text(vocab, context["description"], source, target)
            return out
        raise ValueError(f"template backend: unknown request kind {kind!r}")

    def complete(self, requests: Sequence[Request], attempt: int) -> list[str]:
        return [json.dumps(self.answer(r.context, r.seed), ensure_ascii=False) for r in requests]

"""Shopper queries grounded in a product's own attributes: a subset of its attribute values,
its product noun, brand or price, phrased with per-language shopper templates ("jual ... murah",
"... ราคาถูก", "... giá rẻ") and, for some, typed with typos."""

from __future__ import annotations

import re

from pipelines.catalog.schema import Product
from pipelines.catalog.vocab import Vocabulary
from pipelines.text.noise import add_noise

_SLOT = re.compile(r"\{(\w+)\}")
_FALLBACK = {
    "templates": ["{noun} {a1}", "{brand} {noun}", "{noun} {a1} {a2}", "{noun}"],
    "words": {},
}


def product_noun(product: Product, vocab: Vocabulary, rng) -> str:
    """A noun a shopper would use: the vocabulary's nouns for a known leaf, else the leaf name."""
    leaf = (product.category_ids or ("",))[-1]
    if product.lang in vocab.langs and leaf in vocab.leaf_by_key:
        nouns = vocab.nouns(leaf, product.lang)
        return nouns[int(rng.integers(len(nouns)))]
    return product.category_path[-1]


def gender_value(product: Product, vocab: Vocabulary) -> str | None:
    if product.lang not in vocab.langs:
        return None
    genders = set()
    for key in ("men", "women", "unisex", "kids"):
        value = vocab.langs[product.lang]["values"][key]
        genders.update(value if isinstance(value, list) else [value])
    return next((v for _, v in product.attributes if v in genders), None)


def price_phrase(product: Product, lang: str) -> str | None:
    """A round budget above the price, written as shoppers do: "80rb", "500k", "R$ 50"."""
    if not product.price:
        return None
    magnitude = 10 ** (len(str(int(product.price))) - 1)
    budget = int(-(-product.price // magnitude) * magnitude)
    if lang == "id" and budget >= 1000:
        return f"{budget // 1000}rb"
    if lang == "vi" and budget >= 1000:
        return f"{budget // 1000}k"
    symbol = {"BRL": "R$ ", "MYR": "RM", "THB": "", "PHP": "₱", "USD": "$"}.get(product.currency)
    if symbol is None:
        return None
    return f"{symbol}{budget}" + (" บาท" if product.currency == "THB" else "")


def make_query(
    product: Product, vocab: Vocabulary, rng, *, typo_rate: float = 0.25, style: str = "query"
) -> str:
    doc = vocab.langs.get(product.lang)
    section = doc[style] if doc else _FALLBACK
    words = section.get("words", {})
    gender = gender_value(product, vocab)
    values = [v for _, v in product.attributes if v != gender and len(v) <= 40]
    order = rng.permutation(len(values))
    slots = {
        "noun": product_noun(product, vocab, rng),
        "brand": product.brand,
        "gender": gender.casefold() if gender else None,
        "a1": values[order[0]] if values else None,
        "a2": values[order[1]] if len(values) > 1 else None,
        "price": price_phrase(product, product.lang),
    }
    if doc and style == "synthesis":
        slots["use"] = section["uses"][int(rng.integers(len(section["uses"])))]
        person = section["persons"]
        genders = {
            vocab.value_text(k, product.lang, feminine=f): k
            for k in ("men", "women", "kids", "unisex")
            for f in (False, True)
        }
        slots["person"] = person[genders.get(gender, "unisex")] if gender else person["unisex"]
    for name, options in words.items():
        slots[name] = options[int(rng.integers(len(options)))]
    usable = [t for t in section["templates"] if all(slots.get(s) for s in _SLOT.findall(t))]
    template = usable[int(rng.integers(len(usable)))] if usable else "{noun}"
    query = " ".join(template.format(**{k: v or "" for k, v in slots.items()}).split())
    if rng.random() < 0.7:
        query = query.casefold()
    if rng.random() < typo_rate and doc:
        query = add_noise(query, doc, rng)
    return query

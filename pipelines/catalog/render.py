"""Writing one language-neutral product as a seller in one language would list it.

Titles follow per-language templates with the habits of real marketplace listings: keyword
stuffing, bracketed promotions, English words mixed in, unit spelling variants ("500ml",
"0,5 L", "500 มล."), and Portuguese adjectives that agree with the noun's gender. Every choice
comes from the `rng` passed in, so a listing is a pure function of (product, language, rng).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np

from pipelines.catalog.vocab import AttrSpec, Leaf, Vocabulary

# USD -> local currency, and how sellers round prices there.
CURRENCIES = {
    "USD": (1.0, 0.01, "${v}"),
    "IDR": (16000.0, 100, "Rp{v}"),
    "MYR": (4.5, 0.1, "RM{v}"),
    "THB": (35.0, 1, "฿{v}"),
    "VND": (25000.0, 1000, "{v}₫"),
    "PHP": (57.0, 1, "₱{v}"),
    "BRL": (5.5, 0.1, "R$ {v}"),
}
BRACKETS = ("[{p}]", "【{p}】", "({p})", "✅ {p}", "🔥{p}🔥", "{P}")
_SPACES = re.compile(r"\s+")
_DANGLING = re.compile(r"^[\s|\-–,]+|[\s|\-–,]+$")
_EMPTY_SEP = re.compile(r"(\s[|\-–]\s*)+(?=\s[|\-–]\s|$)")
LATIN_UPPERCASE = ("en", "id", "ms", "tl")
# Hashtags drop spaces and punctuation only: Thai vowel signs are not \w, but belong to the word.
_HASHTAG_DROP = re.compile(r"[\s\-&,.'()!/]+")


@dataclasses.dataclass(frozen=True)
class ProductSpec:
    """A product before it is written in any language."""

    group_id: str
    leaf: Leaf
    brand: str | None
    values: tuple[tuple[AttrSpec, Any], ...]  # (attribute, enum key or number)
    gender: str | None
    price_usd: float


def format_number(value: float, lang_doc: dict) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{value:g}".replace(".", lang_doc["decimal"])


def format_price(price_usd: float, lang_doc: dict) -> tuple[float, str]:
    """(local amount, how a seller writes it): IDR 59.900, VND 159.000₫, BRL R$ 49,90."""
    rate, step, pattern = CURRENCIES[lang_doc["currency"]]
    amount = price_usd * rate
    if step >= 1:
        amount = max(step, round(amount / step) * step)
        if step == 1 and amount > 20:  # charm pricing: 199, 259
            amount = amount - amount % 10 + 9
        amount = float(int(amount))
        text = f"{int(amount):,}".replace(",", lang_doc["thousands"])
    else:
        amount = round(max(step, round(amount / step) * step), 2)
        # charm pricing: $19.99, RM29.90, R$ 49,90
        amount = float(int(amount)) + (0.99 if step == 0.01 else 0.9)
        text = f"{amount:,.2f}"
        text = text.replace(",", "\0").replace(".", lang_doc["decimal"])
        text = text.replace("\0", lang_doc["thousands"])
    return amount, pattern.format(v=text)


def value_text(
    vocab: Vocabulary, spec: AttrSpec, value: Any, lang: str, rng, *, feminine: bool = False
) -> str:
    if spec.kind == "enum":
        return vocab.value_text(value, lang, feminine=feminine)
    unit = spec.unit
    if unit == "gb" and value >= 1000:
        unit, value = "tb", value / 1000
    formats = vocab.units(unit, lang)
    pattern = formats[int(rng.integers(len(formats)))]
    return pattern.format(v=format_number(value, vocab.langs[lang]))


def _pick(rng, items):
    return items[int(rng.integers(len(items)))]


def _clean(text: str) -> str:
    text = _SPACES.sub(" ", text).strip()
    text = _EMPTY_SEP.sub("", text)
    text = _DANGLING.sub("", text)
    words, out = text.split(" "), []
    for w in words:  # templates can put the same word twice (noun2 == a word of noun)
        if not out or out[-1].casefold() != w.casefold():
            out.append(w)
    return " ".join(out)


def render_title(
    vocab: Vocabulary, product: ProductSpec, lang: str, rng, texts: dict[str, str], noun: str
) -> str:
    doc = vocab.langs[lang]
    style = doc["title"]
    nouns = vocab.nouns(product.leaf.key, lang)
    others = [n for n in nouns if n != noun]
    promo = _pick(rng, style["promo"])
    bracket = _pick(rng, BRACKETS).format(p=promo, P=promo.upper())
    keys = [k for k in texts if k != "gender"]
    order = rng.permutation(len(keys))[: int(rng.integers(1, 4))] if keys else []
    slots = {
        "bracket": bracket if rng.random() < 0.5 else "",
        "promo": _pick(rng, style["promo"]) if rng.random() < 0.5 else "",
        "brand": product.brand or "",
        "noun": noun,
        "noun2": _pick(rng, others) if others and rng.random() < 0.5 else "",
        "gender": texts.get("gender", "") if rng.random() < 0.7 else "",
        "attrs": " ".join(texts[keys[i]] for i in order),
        "extra": _pick(rng, style["extras"]) if rng.random() < 0.6 else "",
    }
    title = _clean(_pick(rng, style["templates"]).format(**slots))
    if lang in LATIN_UPPERCASE and rng.random() < 0.12:
        title = title.upper()
    return title[:150].rstrip()


def render_description(
    vocab: Vocabulary, product: ProductSpec, lang: str, rng, texts: dict[str, str], noun: str
) -> str:
    style = vocab.langs[lang]["description"]
    head = _clean(" ".join(filter(None, [product.brand or "", noun, *list(texts.values())[:2]])))
    bullet = _pick(rng, ("- ", "• ", "✔ ", "* "))
    lines = [head, _pick(rng, style["openers"]), "", _pick(rng, style["spec_headers"])]
    names = {spec.key: vocab.attr_name(spec, lang) for spec, _ in product.values}
    names.setdefault("gender", vocab.langs[lang]["attribute_names"]["gender"])
    lines += [f"{bullet}{names[key]}: {text}" for key, text in texts.items()]
    lines.append("")
    picks = rng.permutation(len(style["benefits"]))[: int(rng.integers(1, 3))]
    lines += [style["benefits"][i] for i in picks]
    lines.append(_pick(rng, style["closers"]))
    if rng.random() < 0.3:
        tags = [noun, *(vocab.names(product.leaf.path[0], lang)[:1])]
        lines.append(" ".join("#" + _HASHTAG_DROP.sub("", t.casefold()) for t in tags))
    return "\n".join(lines)


def render_listing(
    vocab: Vocabulary, product: ProductSpec, lang: str, rng: np.random.Generator
) -> dict[str, Any]:
    """One catalog record (the JSONL schema of `pipelines.catalog.schema`)."""
    noun = _pick(rng, vocab.nouns(product.leaf.key, lang))
    feminine = vocab.is_feminine(noun, lang)
    texts = {
        spec.key: value_text(vocab, spec, v, lang, rng, feminine=feminine)
        for spec, v in product.values
    }
    if product.gender and "gender" not in texts:
        texts["gender"] = vocab.value_text(product.gender, lang, feminine=feminine)
    names = {spec.key: vocab.attr_name(spec, lang) for spec, _ in product.values}
    attributes = {names[k]: v for k, v in texts.items() if k in names}
    if product.gender and "gender" not in names:
        attributes[vocab.langs[lang]["attribute_names"]["gender"]] = texts["gender"]
    price, _ = format_price(product.price_usd, vocab.langs[lang])
    record = {
        "id": f"{product.group_id}-{lang}",
        "lang": lang,
        "group_id": product.group_id,
        "title": render_title(vocab, product, lang, rng, texts, noun),
        "description": render_description(vocab, product, lang, rng, texts, noun),
        "category_path": [vocab.names(k, lang)[0] for k in product.leaf.path],
        "category_ids": list(product.leaf.path),
        "attributes": attributes,
        "price": price,
        "currency": vocab.langs[lang]["currency"],
    }
    if product.brand:
        record["brand"] = product.brand
    return record

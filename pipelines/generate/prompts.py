"""Prompts for grounded generation: each carries a product's own context and asks for JSON."""

from __future__ import annotations

import json

from pipelines.catalog.schema import Product

LANGUAGE_NAMES = {
    "en": "English",
    "id": "Indonesian",
    "ms": "Malay",
    "th": "Thai",
    "vi": "Vietnamese",
    "tl": "Filipino (Tagalog)",
    "pt": "Brazilian Portuguese",
}
SYSTEM = (
    "You write data for training multilingual e-commerce search models. Reply with one "
    "JSON object and nothing else."
)


def language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code, code)


def product_context(p: Product, *, description_chars: int = 600) -> dict:
    return {
        "title": p.title,
        "category": " > ".join(p.category_path),
        "attributes": dict(p.attributes),
        "brand": p.brand,
        "description": p.description[:description_chars],
        "language": language_name(p.lang),
    }


def queries_schema(n: int) -> dict:
    return {
        "type": "object",
        "required": ["queries"],
        "properties": {
            "queries": {
                "type": "array",
                "minItems": 1,
                "maxItems": n,
                "items": {"type": "string", "minLength": 2, "maxLength": 120},
            }
        },
    }


TRANSLATION_SCHEMA = {
    "type": "object",
    "required": ["title", "description"],
    "properties": {
        "title": {"type": "string", "minLength": 2, "maxLength": 300},
        "description": {"type": "string", "minLength": 2, "maxLength": 4000},
    },
}
BACK_TRANSLATION_SCHEMA = {
    "type": "object",
    "required": ["title"],
    "properties": {"title": {"type": "string", "minLength": 2, "maxLength": 300}},
}


def queries_messages(p: Product, n: int) -> tuple[dict, ...]:
    lang = language_name(p.lang)
    user = (
        f"Product listing:\n{json.dumps(product_context(p), ensure_ascii=False, indent=1)}\n\n"
        f"Write {n} different search queries that shoppers in {lang} would type into a "
        f"marketplace search box to find exactly this product. Ground every query in the "
        f"listing: use its attributes, brand, product type or intended use; vary the phrasing "
        f"(short keywords, questions, needs, budget), write as shoppers do (lowercase, "
        f"abbreviations, occasional typos, English words where {lang} shoppers use them). "
        f'Answer as JSON: {{"queries": ["...", ...]}}'
    )
    return ({"role": "system", "content": SYSTEM}, {"role": "user", "content": user})


def translation_messages(p: Product, target: str) -> tuple[dict, ...]:
    listing = {
        "title": p.title,
        "description": p.description,
        "attributes": dict(p.attributes),
        "category": " > ".join(p.category_path),
    }
    user = (
        f"Translate this {language_name(p.lang)} product listing into {language_name(target)}, "
        f"written the way a native seller on a {language_name(target)} marketplace would write "
        f"it. Keep brand names, model numbers, sizes and units; translate everything else.\n\n"
        f"{json.dumps(listing, ensure_ascii=False, indent=1)}\n\n"
        f'Answer as JSON: {{"title": "...", "description": "..."}}'
    )
    return ({"role": "system", "content": SYSTEM}, {"role": "user", "content": user})


def back_translation_messages(title: str, source: str, target: str) -> tuple[dict, ...]:
    user = (
        f"Translate this {language_name(source)} product title into {language_name(target)}. "
        f"Keep brand names, model numbers and units.\n\nTitle: {title}\n\n"
        f'Answer as JSON: {{"title": "..."}}'
    )
    return ({"role": "system", "content": SYSTEM}, {"role": "user", "content": user})

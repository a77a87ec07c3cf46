"""Data that ships with the package."""

from __future__ import annotations

import json
from importlib import resources


def load_sample() -> list[dict]:
    """The bundled multilingual e-commerce sample: one record per (language, product) with a
    shopper `query` and a seller `title` (7 languages x 6 products)."""
    text = resources.files(__name__).joinpath("sample.jsonl").read_text("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]

"""Data that ships with the package."""

from __future__ import annotations

from importlib import resources

from compass_jax import jsonio


def _jsonl(name: str) -> list[dict]:
    with resources.as_file(resources.files(__name__).joinpath(name)) as path:
        return jsonio.read_jsonl(path)


def load_sample() -> list[dict]:
    """The bundled multilingual e-commerce sample: one record per (language, product) with a
    shopper `query` and a seller `title` (7 languages x 6 products)."""
    return _jsonl("sample.jsonl")


def load_general() -> list[dict]:
    """General-domain (not e-commerce) sentences, each in the same 7 languages: records
    `{"sentence", "lang", "text"}` (16 x 7). The forgetting check of domain fine-tuning."""
    return _jsonl("general.jsonl")

"""The bundled catalog vocabularies (data/*.json), loaded and checked once.

`taxonomy.json`, `attributes.json` and `brands.json` are language-neutral; `lang/<code>.json`
holds everything written in one language (category names, attribute names and values, unit
formats, title/description/query styles). A missing translation is an error at load time,
naming the file and key, rather than English silently leaking into another language.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any

from compass_jax import jsonio

DATA_DIR = pathlib.Path(__file__).parent / "data"
LANGS = ("en", "id", "ms", "th", "vi", "tl", "pt")


class VocabularyError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class AttrSpec:
    key: str
    kind: str  # "enum" | "numeric"
    name: str  # display-name key in lang/*.json attribute_names
    values: tuple
    unit: str | None = None


@dataclasses.dataclass(frozen=True)
class Leaf:
    key: str
    path: tuple[str, ...]  # department, subcategory, leaf keys
    attrs: tuple[AttrSpec, ...]
    price: tuple[float, float]  # USD range
    brands: tuple[str, ...]
    gender: str | None  # fixed by the department, else None


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: cache keys
class Vocabulary:
    leaves: tuple[Leaf, ...]
    departments: tuple[str, ...]
    langs: dict[str, dict[str, Any]]
    unit_formats: dict[str, list[str]]

    def names(self, key: str, lang: str) -> list[str]:
        """[category name, product nouns...] of a taxonomy node in `lang`."""
        return self.langs[lang]["categories"][key]

    def nouns(self, key: str, lang: str) -> list[str]:
        names = self.names(key, lang)
        return names[1:] or names[:1]

    def value_text(self, value: Any, lang: str, *, feminine: bool = False) -> str:
        """An enum value in `lang`; Portuguese values with gender forms agree with the noun."""
        text = self.langs[lang]["values"].get(value, value)
        if isinstance(text, list):
            return text[1] if feminine and len(text) > 1 else text[0]
        return str(text)

    def attr_name(self, spec: AttrSpec, lang: str) -> str:
        return self.langs[lang]["attribute_names"][spec.name]

    def units(self, unit: str, lang: str) -> list[str]:
        return self.langs[lang]["units"].get(unit) or self.unit_formats[unit]

    def is_feminine(self, noun: str, lang: str) -> bool:
        words = self.langs[lang].get("feminine_words") or ()
        return bool(noun) and noun.split()[0] in words

    @functools.cached_property
    def leaf_by_key(self) -> dict[str, Leaf]:
        return {leaf.key: leaf for leaf in self.leaves}


def _read(path: pathlib.Path) -> Any:
    try:
        return jsonio.read_json(path, expect=None)
    except jsonio.JSONFileError as e:
        raise VocabularyError(str(e)) from None


def _attr(item: Any, attributes: dict, where: str) -> AttrSpec:
    key, values = (item, None) if isinstance(item, str) else (item["key"], item.get("values"))
    if key in attributes["enum"]:
        spec = attributes["enum"][key]
        return AttrSpec(key, "enum", spec["name"], tuple(values or spec["values"]))
    if key in attributes["numeric"]:
        spec = attributes["numeric"][key]
        return AttrSpec(key, "numeric", spec["name"], tuple(values or spec["values"]), spec["unit"])
    raise VocabularyError(f"{where}: unknown attribute {key!r} (not in attributes.json)")


def _leaves(taxonomy: dict, attributes: dict, brands: dict, where: str) -> list[Leaf]:
    leaves = []
    for dept in taxonomy["departments"]:
        for sub in dept["subs"]:
            for item in sub["leaves"]:
                leaf = {"key": item} if isinstance(item, str) else item
                at = f"{where}: leaf {leaf['key']!r}"
                pool = leaf.get("brands") or sub.get("brands") or dept["brands"]
                if pool not in brands:
                    raise VocabularyError(f"{at}: unknown brand pool {pool!r}")
                attrs = tuple(_attr(a, attributes, at) for a in leaf.get("attrs", sub["attrs"]))
                lo, hi = leaf.get("price", sub["price"])
                leaves.append(
                    Leaf(
                        key=leaf["key"],
                        path=(dept["key"], sub["key"], leaf["key"]),
                        attrs=attrs,
                        price=(float(lo), float(hi)),
                        brands=tuple(brands[pool]),
                        gender=dept.get("gender"),
                    )
                )
    return leaves


def _check_language(lang: str, doc: dict, vocab: Vocabulary, where: str) -> None:
    nodes = {k for leaf in vocab.leaves for k in leaf.path}
    missing = sorted(nodes - set(doc["categories"]))
    if missing:
        raise VocabularyError(f"{where}: no category names for {missing[:5]}")
    names = {spec.name for leaf in vocab.leaves for spec in leaf.attrs}
    missing = sorted(names - set(doc["attribute_names"]))
    if missing:
        raise VocabularyError(f"{where}: no attribute names for {missing}")
    en_values = set(vocab.langs["en"]["values"]) if "en" in vocab.langs else set()
    missing = sorted(en_values - set(doc["values"]))
    if missing:
        raise VocabularyError(f"{where}: no translation for values {missing[:5]}")
    for key in ("title", "description", "query", "synthesis", "misspell"):
        if key not in doc:
            raise VocabularyError(f"{where}: missing section {key!r}")


@functools.lru_cache(maxsize=4)
def load_vocabulary(data_dir: str | None = None) -> Vocabulary:
    root = pathlib.Path(data_dir) if data_dir else DATA_DIR
    taxonomy = _read(root / "taxonomy.json")
    attributes = _read(root / "attributes.json")
    brands = _read(root / "brands.json")
    leaves = _leaves(taxonomy, attributes, brands, str(root / "taxonomy.json"))
    keys = [leaf.key for leaf in leaves]
    if len(set(keys)) != len(keys):
        raise VocabularyError(f"{root / 'taxonomy.json'}: duplicate leaf keys")
    langs = {lang: _read(root / "lang" / f"{lang}.json") for lang in LANGS}
    vocab = Vocabulary(
        leaves=tuple(leaves),
        departments=tuple(d["key"] for d in taxonomy["departments"]),
        langs=langs,
        unit_formats=attributes["unit_formats"],
    )
    for lang, doc in langs.items():
        _check_language(lang, doc, vocab, str(root / "lang" / f"{lang}.json"))
    return vocab

"""The catalog format: one JSON object per line.

Required: `id`, `lang`, `title`, `description`, `category_path` (names, root first),
`attributes` (object). Optional: `brand`, `price`, `currency`, `group_id` (the same product
across languages or variants; defaults to `id`) and `category_ids` (stable ids of the
`category_path` levels, shared across languages, so one class id covers every language).
Unknown fields are ignored, so richer catalogs load unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

from compass_jax import jsonio

_LANG = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


class CatalogError(ValueError):
    """A malformed catalog record; the message names the file and line."""


@dataclasses.dataclass(frozen=True)
class Product:
    id: str
    lang: str
    title: str
    description: str
    category_path: tuple[str, ...]
    attributes: tuple[tuple[str, str], ...]  # (name, value) pairs in catalog order
    group_id: str
    brand: str | None = None
    price: float | None = None
    currency: str | None = None
    category_ids: tuple[str, ...] | None = None

    @property
    def category_keys(self) -> tuple[str, ...]:
        """Language-independent category path: the ids when given, else the names."""
        return self.category_ids or self.category_path

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "lang": self.lang,
            "group_id": self.group_id,
            "title": self.title,
            "description": self.description,
            "category_path": list(self.category_path),
            "attributes": dict(self.attributes),
        }
        if self.category_ids is not None:
            out["category_ids"] = list(self.category_ids)
        for name in ("brand", "price", "currency"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


def _string(raw: Mapping, field: str, where: str, *, required: bool = True) -> str | None:
    value = raw.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise CatalogError(f"{where}: field {field!r} must be a non-empty string, got {value!r}")
    return value


def _string_list(raw: Mapping, field: str, where: str) -> tuple[str, ...]:
    value = raw.get(field)
    if not isinstance(value, list) or not value:
        raise CatalogError(f"{where}: field {field!r} must be a non-empty list of strings")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise CatalogError(f"{where}: {field}[{i}] must be a non-empty string, got {item!r}")
    return tuple(value)


def _attribute_value(value: Any, where: str, name: str) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return format(value, "g")
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list) and value and all(isinstance(v, str | int | float) for v in value):
        return ", ".join(str(v) for v in value)
    raise CatalogError(
        f"{where}: attribute {name!r} must be a string, number, boolean or list, got {value!r}"
    )


def validate_record(raw: Any, where: str) -> Product:
    """A `Product` from one parsed JSON line; `where` ("file:line") prefixes every error."""
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    product_id = _string(raw, "id", where)
    lang = _string(raw, "lang", where)
    if not _LANG.match(lang):
        raise CatalogError(f"{where}: field 'lang' must be a language code like 'th' or 'pt-BR'")
    title = _string(raw, "title", where)
    description = _string(raw, "description", where)
    path = _string_list(raw, "category_path", where)
    attributes = raw.get("attributes")
    if not isinstance(attributes, dict):
        raise CatalogError(f"{where}: field 'attributes' must be an object")
    pairs = tuple((str(k), _attribute_value(v, where, k)) for k, v in attributes.items())
    category_ids = None
    if raw.get("category_ids") is not None:
        category_ids = _string_list(raw, "category_ids", where)
        if len(category_ids) != len(path):
            raise CatalogError(
                f"{where}: 'category_ids' has {len(category_ids)} levels but 'category_path' "
                f"has {len(path)}"
            )
    price = raw.get("price")
    if price is not None and (
        isinstance(price, bool) or not isinstance(price, int | float) or price < 0
    ):
        raise CatalogError(f"{where}: field 'price' must be a non-negative number, got {price!r}")
    return Product(
        id=product_id,
        lang=lang,
        title=title,
        description=description,
        category_path=path,
        attributes=pairs,
        group_id=_string(raw, "group_id", where, required=False) or product_id,
        brand=_string(raw, "brand", where, required=False),
        price=None if price is None else float(price),
        currency=_string(raw, "currency", where, required=False),
        category_ids=category_ids,
    )


def read_catalog(path: str | os.PathLike, errors: list | None = None) -> Iterator[Product]:
    """Validated products of one JSONL file, in file order. The first bad line raises, unless
    `errors` is a list: then each bad line's message is appended to it and the line skipped."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such catalog file")
    seen: dict[str, int] = {}
    with open(path, "rb") as f:
        for number, raw_line in enumerate(f, start=1):
            try:
                product = _parse_line(raw_line, f"{path}:{number}", seen, number)
            except CatalogError as e:
                if errors is None:
                    raise
                errors.append(str(e))
                continue
            if product is not None:
                yield product


def _parse_line(raw_line: bytes, where: str, seen: dict, number: int) -> Product | None:
    try:
        line = raw_line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CatalogError(f"{where}: not valid UTF-8 ({e.reason})") from None
    if not line.strip():
        return None
    try:
        raw = jsonio.loads(line)
    except json.JSONDecodeError as e:
        raise CatalogError(f"{where}: invalid JSON ({e.msg}, column {e.colno})") from None
    except ValueError as e:  # NaN / Infinity: not JSON
        raise CatalogError(f"{where}: {e}") from None
    product = validate_record(raw, where)
    if product.id in seen:
        raise CatalogError(
            f"{where}: duplicate id {product.id!r} (first on line {seen[product.id]})"
        )
    seen[product.id] = number
    return product

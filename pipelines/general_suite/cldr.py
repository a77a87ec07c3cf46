"""Display names from the Unicode CLDR, as Babel ships them: the same key (a territory code, a
unit id, a time-zone id) names one thing in English and in each language, so keys align the
pairs. Only Babel's public `Locale` properties are read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

# CLDR spells Tagalog/Filipino `fil`, and its `pt` is Brazilian Portuguese.
CLDR_LOCALE = {"id": "id", "th": "th", "vi": "vi", "ms": "ms", "tl": "fil", "pt": "pt"}


def _flat(mapping) -> dict[str, str]:
    return {str(k): v for k, v in mapping.items() if isinstance(v, str)}


def _units(locale) -> dict[str, str]:
    return {k: v["long"] for k, v in locale.unit_display_names.items() if v.get("long")}


def _zones(locale) -> dict[str, str]:
    names = {}
    for zone, forms in locale.meta_zones.items():
        for kind, name in (forms.get("long") or {}).items():
            names[f"{zone}/{kind}"] = name
    return names


def _cities(locale) -> dict[str, str]:
    return {z: v["city"] for z, v in locale.time_zones.items() if v.get("city")}


def _calendar(locale) -> dict[str, str]:
    names = {}
    for field in ("days", "months", "quarters"):
        for key, name in getattr(locale, field)["format"]["wide"].items():
            names[f"{field}/{key}"] = name
    return names


# Field -> the `{key: name}` it gives for a `babel.Locale`.
FIELDS: dict[str, Callable] = {
    "territories": lambda loc: _flat(loc.territories),
    "languages": lambda loc: _flat(loc.languages),
    "scripts": lambda loc: _flat(loc.scripts),
    "currencies": lambda loc: _flat(loc.currencies),
    "units": _units,
    "time_zones": _zones,
    "cities": _cities,
    "calendar": _calendar,
}


def cldr_pairs(lang: str, field: str) -> Iterator[tuple[str, str, bool]]:
    """`(english, target, False)` for every key of `field` that both locales name, in key
    order."""
    from babel import Locale

    english = FIELDS[field](Locale.parse("en"))
    target = FIELDS[field](Locale.parse(CLDR_LOCALE[lang]))
    for key in sorted(english.keys() & target.keys()):
        # A locale without a name for a code gives the code itself ("armi" for Imperial
        # Aramaic): not a translation.
        if target[key].casefold() != key.rsplit("/", 1)[-1].casefold():
            yield english[key], target[key], False

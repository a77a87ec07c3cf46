"""Gettext catalogs (.po, else .mo) that ship inside installed Python packages.

A package's catalogs sit at `.../<locale>/LC_MESSAGES/<domain>.po`. The English text is the
`msgid` (gettext's convention), or, where the msgid is a symbolic id, the `Default: "..."`
extracted comment (the Zope/Plone convention: `#. Default: "Add new item"` over
`msgid "heading_add_new_item"`). Packages are located with `importlib` without importing them,
and read as files: the operating system's own catalogs (`/usr/share/locale`) are never used,
since they differ between machines.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import os
import re
from collections.abc import Iterator

from pipelines.general_suite.gettext_files import (
    CatalogError,
    Message,
    read_catalog_file,
    unescape,
)

# Our language code -> the catalog locale directories that hold it. `pt` is Brazilian
# Portuguese, `tl` Tagalog/Filipino (CLDR and newer catalogs say `fil`).
LOCALES = {
    "id": ("id", "id_ID"),
    "th": ("th", "th_TH"),
    "vi": ("vi", "vi_VN"),
    "ms": ("ms", "ms_MY"),
    "tl": ("fil", "fil_PH", "tl", "tl_PH"),
    "pt": ("pt_BR",),
}
# Where a package's metadata names its code's licence but its translations come from elsewhere.
DATA_LICENCE = {
    "babel": "Unicode-3.0 (CLDR locale data)",
    "pycountry": "LGPL-2.1-only (Debian iso-codes translations)",
}


class SourceError(ValueError):
    """A source package that is missing or unreadable; the message says what to install."""


@dataclasses.dataclass(frozen=True)
class Package:
    name: str  # distribution name
    module: str  # importable name
    version: str
    licence: str
    root: str  # the package directory

    def provenance(self) -> dict:
        out = {"package": self.name, "version": self.version, "licence": self.licence}
        if self.name in DATA_LICENCE:
            out["data_licence"] = DATA_LICENCE[self.name]
        return out


def _licence(meta) -> str:
    if expression := meta.get("License-Expression"):
        return expression
    classifiers = [c.rsplit(" :: ", 1)[-1] for c in meta.get_all("Classifier") or []
                   if c.startswith("License ::")]  # fmt: skip
    return "; ".join(classifiers) or (meta.get("License") or "unknown").splitlines()[0]


def find_package(distribution: str, module: str) -> Package:
    """The installed package `module` of `distribution` (located, not imported), with the
    distribution's version and licence."""
    try:
        meta = importlib.metadata.metadata(distribution)
        spec = importlib.util.find_spec(module)
    except (importlib.metadata.PackageNotFoundError, ModuleNotFoundError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(
            f"source package {distribution!r} is not installed: pip install 'compass-jax[data]'"
        )
    root = next(iter(spec.submodule_search_locations))
    return Package(distribution, module, meta["Version"], _licence(meta), root)


def catalog_files(package: Package, lang: str) -> list[str]:
    """Paths (relative to the package directory, sorted) of `lang`'s catalogs; a `.po` hides
    the `.mo` compiled from it."""
    found = []
    for root, dirs, files in os.walk(package.root):
        dirs.sort()
        parts = os.path.relpath(root, package.root).split(os.sep)
        if len(parts) < 2 or parts[-1] != "LC_MESSAGES" or parts[-2] not in LOCALES[lang]:
            continue
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            if ext == ".po" or (ext == ".mo" and f"{stem}.po" not in files):
                found.append(os.path.relpath(os.path.join(root, name), package.root))
    return found


_DEFAULT = re.compile(r'^Default: "(.*)"$', re.DOTALL)


def english_of(message: Message) -> str:
    """The English text of a message: its `Default: "..."` extracted comment if it has one
    (the comment may be wrapped over several lines), else its msgid (the singular, for a
    plural message)."""
    found = _DEFAULT.match(" ".join(message.comments))
    return unescape(found.group(1)) if found else message.msgid


def read_catalog(path: str) -> Iterator[tuple[str, str, bool]]:
    """`(english, target, fuzzy)` per message of a .po or .mo file (the header and obsolete
    entries left out). A plural message pairs the English singular with the target form for
    n = 1 (by the catalog's Plural-Forms); contexts (`msgctxt`) are ignored."""
    try:
        catalog = read_catalog_file(path)
    except CatalogError as e:
        raise SourceError(str(e)) from None
    one = catalog.singular_index()
    for message in catalog.messages:
        strings = message.strings if message.plural is not None else message.strings[:1]
        target = strings[one] if one < len(strings) else ""
        yield english_of(message), target, message.fuzzy

"""Each language's pool of clean, unambiguous English pairs, and a stratified sample of it.

A stratum is one kind of text from one source: a catalog domain of a package
(`django:djangojs`, `pycountry:iso639-3`) or a CLDR field (`babel:territories`). Strata are read
in `SOURCES` order, so when two give the same English text or the same translation, the
earlier source's pair survives (`clean.dedupe`). The sample takes the strata in turn, one pair
each, until it has `size` pairs, so one large stratum (the ~8,000 language names of ISO 639-3)
cannot crowd out the UI sentences; within a stratum, pairs go by a seeded hash of their English
text, so every language samples the same English strings where it has them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator

from pipelines.general_suite.catalogs import Package, catalog_files, find_package, read_catalog
from pipelines.general_suite.cldr import FIELDS, cldr_pairs
from pipelines.general_suite.clean import clean_pairs, dedupe

LANGS = ("id", "th", "vi", "ms", "tl", "pt")
CLDR = "babel"
# (distribution, module), in priority order: sentence-like UI catalogs, then the curated CLDR
# names, then the ISO names.
SOURCES = (
    ("django", "django"),
    ("sphinx", "sphinx"),
    ("django-allauth", "allauth"),
    ("plone.app.locales", "plone.app.locales"),
    (CLDR, "babel"),
    ("pycountry", "pycountry"),
)


@dataclasses.dataclass(frozen=True)
class Pair:
    english: str
    target: str
    stratum: str


@dataclasses.dataclass
class Pool:
    """One language's pairs, with what each source gave and what the rules dropped."""

    lang: str
    pairs: list[Pair]
    files: dict[str, list[str]]  # package -> catalog files read (relative to the package)
    verdicts: Counter  # entries per rule that dropped them, and "kept" for the pool's
    read: Counter  # stratum -> entries read


def _strata(package: Package, lang: str) -> dict[str, list[str]]:
    by_domain = defaultdict(list)
    for path in catalog_files(package, lang):
        stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        by_domain[f"{package.name}:{stem}"].append(path)
    return dict(sorted(by_domain.items()))


def read_sources(
    lang: str, packages: dict[str, Package]
) -> Iterator[tuple[str, str, list[str], Iterable[tuple[str, str, bool]]]]:
    """`(package, stratum, files, entries)` for `lang`, in priority order; `entries` are
    `(english, target, fuzzy)`, read lazily."""
    for name, package in packages.items():
        if name == CLDR:
            for field in FIELDS:
                yield name, f"{CLDR}:{field}", [], cldr_pairs(lang, field)
            continue
        for stratum, files in _strata(package, lang).items():
            paths = [os.path.join(package.root, f) for f in files]
            yield name, stratum, files, (e for path in paths for e in read_catalog(path))


def source_packages() -> dict[str, Package]:
    """The installed source packages, by distribution name, in priority order."""
    return {dist: find_package(dist, module) for dist, module in SOURCES}


def build_pool(lang: str, packages: dict[str, Package], **rules) -> Pool:
    """`lang`'s cleaned, deduplicated pairs, in priority order (see the module docstring)."""
    pairs, files, verdicts, read = [], defaultdict(list), Counter(), Counter()
    for package, stratum, paths, entries in read_sources(lang, packages):
        before = verdicts.total()
        kept = clean_pairs(entries, verdicts, **rules)
        read[stratum] += verdicts.total() - before
        files[package] += paths
        pairs += [Pair(e, t, stratum) for e, t in kept]
    keep = dedupe([(p.english, p.target) for p in pairs], verdicts)
    verdicts["kept"] -= verdicts["duplicate"]
    return Pool(lang, [pairs[i] for i in keep], dict(files), verdicts, read)


def _rank(seed: int, stratum: str, english: str) -> bytes:
    return hashlib.blake2b(f"{seed}\x00{stratum}\x00{english}".encode(), digest_size=8).digest()


def stratified_order(pairs: list[Pair], seed: int) -> list[Pair]:
    """All of `pairs`, strata taken in turn (first-seen order), each in seeded-hash order."""
    by_stratum: dict[str, list[Pair]] = defaultdict(list)
    for p in pairs:
        by_stratum[p.stratum].append(p)
    queues = [sorted(q, key=lambda p: _rank(seed, p.stratum, p.english))
              for q in by_stratum.values()]  # fmt: skip
    order = []
    for depth in range(max((len(q) for q in queues), default=0)):
        order += [q[depth] for q in queues if depth < len(q)]
    return order

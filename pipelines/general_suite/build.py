"""Write the general-domain suite: per language, bitext mining and cross-lingual retrieval over
human translations from installed packages, with provenance in the suite file.

Tasks per language `x` (`pt` is Brazilian Portuguese, `tl` Tagalog/Filipino):
  l10n-bitext-<x>-en   bitext: `pairs_per_language` sampled pairs; each side must find its
                       translation among the other side's texts (accuracy, both directions)
  l10n-xling-<x>-en    retrieval: each sampled `x` text is a query for its English source,
                       among the English texts of the sample and `distractors` more English
                       texts from the same language's pool (which are, after deduplication,
                       nobody's translation of the query)
Both tasks embed every text with the `query` prompt (symmetric, as E5 advises for
text-to-text similarity), so they share embeddings in the evaluation cache.

No human-scored similarity (STS) data ships in any package found, so there is no STS task.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter

from tqdm.auto import tqdm

from compass_jax.atomic import atomic_dir
from compass_jax.jsonio import dumps, write_json, write_jsonl
from pipelines.general_suite.pool import LANGS, build_pool, source_packages, stratified_order

NAME = "general-l10n"
SUITE_FILE = "suite.json"
BUILDER_VERSION = 1  # bump when the rules or the task layout change: cached suites rebuild
PAIRS_PER_LANGUAGE = 1000
DISTRACTORS = 1000
PROMPTS = {"query": "query", "document": "query"}


def build_spec(
    *,
    langs: tuple[str, ...] = LANGS,
    pairs_per_language: int = PAIRS_PER_LANGUAGE,
    distractors: int = DISTRACTORS,
    seed: int = 0,
    progress: bool = True,
) -> tuple[dict, dict[str, list[dict]]]:
    """`(suite.json content, {file name: records})` built from the installed packages."""
    if pairs_per_language < 1 or distractors < 0:
        raise ValueError(
            f"pairs_per_language must be >= 1 and distractors >= 0, got {pairs_per_language} "
            f"and {distractors}"
        )
    packages = source_packages()
    files, tasks, languages, read_files = {}, [], {}, {}
    for lang in tqdm(langs, desc="general suite", unit="lang", disable=not progress):
        pool = build_pool(lang, packages)
        order = stratified_order(pool.pairs, seed)
        sample, rest = order[:pairs_per_language], order[pairs_per_language:]
        bitext = f"l10n-bitext-{lang}-en"
        files[f"{bitext}.jsonl"] = [
            {"source": p.target, "target": p.english, "origin": p.stratum} for p in sample
        ]
        xling = f"l10n-xling-{lang}-en"
        files[f"{xling}.jsonl"] = [{"query": p.target, "relevant": [p.english]} for p in sample]
        files[f"{xling}.corpus.jsonl"] = [{"text": p.english} for p in sample + rest[:distractors]]
        tasks += [
            {"name": bitext, "type": "bitext", "lang": lang, "data": f"{bitext}.jsonl",
             "prompts": PROMPTS},
            {"name": xling, "type": "retrieval", "lang": lang, "data": f"{xling}.jsonl",
             "corpus": f"{xling}.corpus.jsonl", "prompts": PROMPTS},
        ]  # fmt: skip
        languages[lang] = {
            "pool": len(pool.pairs),
            "sampled": len(sample),
            "distractors": len(rest[:distractors]),
            "sampled_by_source": _count(sample),
            "pool_by_source": _count(pool.pairs),
            "read_by_source": dict(pool.read),
            "entries": dict(sorted(pool.verdicts.items())),
        }
        for package, paths in pool.files.items():
            read_files.setdefault(package, {})[lang] = paths
    sources = [{**p.provenance(), "files": read_files.get(name, {})}
               for name, p in packages.items()]  # fmt: skip
    spec = {
        "name": NAME,
        "tasks": tasks,
        "metadata": {
            "builder": "pipelines.general_suite",
            "builder_version": BUILDER_VERSION,
            "seed": seed,
            "pairs_per_language": pairs_per_language,
            "distractors": distractors,
            "languages": languages,
            "sources": sources,
            "sts": "none: no human-scored similarity data ships in the packages used",
            "note": "pt is Brazilian Portuguese (pt_BR catalogs, CLDR pt); tl is "
            "Tagalog/Filipino (fil and tl catalogs, CLDR fil)",
        },
    }
    return spec, files


def write_general_suite(out: str | os.PathLike, *, progress: bool = True, **options) -> str:
    """Build the suite into `out` (replacing it whole, atomically); returns the suite file's
    path. `options` go to `build_spec`."""
    spec, files = build_spec(progress=progress, **options)
    with atomic_dir(out, overwrite=True) as tmp:
        for name, records in files.items():
            write_jsonl(os.path.join(tmp, name), records)
        write_json(os.path.join(tmp, SUITE_FILE), spec)
    return os.path.join(os.fspath(out), SUITE_FILE)


def general_suite(cache: str | os.PathLike | None = None, *, progress: bool = False) -> str:
    """The path of the default general suite's file, built on first use under `cache`
    (default: `compass_jax.resolve.cache_dir() / "suites"`) and rebuilt when the builder or
    a source package's version changes."""
    if cache is None:
        from compass_jax.resolve import cache_dir

        cache = cache_dir() / "suites"
    versions = {n: p.version for n, p in source_packages().items()}
    key = hashlib.sha256(dumps([BUILDER_VERSION, versions]).encode()).hexdigest()[:12]
    out = os.path.join(os.fspath(cache), f"{NAME}-{key}")
    path = os.path.join(out, SUITE_FILE)
    if not os.path.isfile(path):
        write_general_suite(out, progress=progress)
    return path


def _count(pairs) -> dict[str, int]:
    return dict(sorted(Counter(p.stratum for p in pairs).items()))

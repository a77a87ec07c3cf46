"""Length and script checks: empty or runaway texts, and text in the wrong writing system
(a Thai record whose text has almost no Thai letters is a mislabelled or broken one; Latin
brand names inside Thai titles are normal, hence a share, not a purity test)."""

from __future__ import annotations

from collections.abc import Iterable

from pipelines.filters import reject
from pipelines.filters.langid import texts_to_check
from pipelines.text.script import expected_script, script_share


def length_filter(
    records: Iterable[dict],
    *,
    min_chars: int = 2,
    max_query_chars: int = 512,
    max_positive_chars: int = 4000,
) -> tuple[list[dict], list[dict]]:
    kept, rejects = [], []
    for rec in records:
        q, p = rec["query"].strip(), rec["positive"].strip()
        if len(q) < min_chars or len(p) < min_chars:
            rejects.append(reject(rec, "length", f"text shorter than {min_chars} characters"))
        elif len(q) > max_query_chars:
            rejects.append(reject(rec, "length", f"query longer than {max_query_chars}"))
        elif len(p) > max_positive_chars:
            rejects.append(reject(rec, "length", f"positive longer than {max_positive_chars}"))
        elif rec["query"].casefold().strip() == rec["positive"].casefold().strip():
            rejects.append(reject(rec, "length", "query equals positive"))
        else:
            kept.append(rec)
    return kept, rejects


def script_filter(
    records: Iterable[dict], *, min_share: float = 0.3
) -> tuple[list[dict], list[dict]]:
    kept, rejects = [], []
    for rec in records:
        bad = None
        for text, lang in texts_to_check(rec):
            want = expected_script(lang)
            share = script_share(text)
            if share and share.get(want, 0.0) < min_share:
                bad = f"{share.get(want, 0.0):.0%} {want} letters in a {lang} text"
                break
        (rejects.append(reject(rec, "script", bad)) if bad else kept.append(rec))
    return kept, rejects

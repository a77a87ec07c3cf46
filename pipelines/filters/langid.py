"""Language identification with py3langid (langid.py's model, shipped inside the package:
offline, ~5,000 texts/s on one core), restricted to the build's languages.

Short texts are skipped: a four-word keyword title carries too little signal, and marketplace
titles mix in English words by habit. Indonesian and Malay share most of their vocabulary and
differ in a handful of words (kasut/sepatu, percuma/gratis, seluar/celana); a short description
is often truly ambiguous, so the two are one confusable group by default: a record labelled
`ms` passes when the model says `id` and the reverse, and the report counts how often that
happened (`agree_confusable`). Filipino listings are Taglish and do not get that allowance:
they must read as `tl`, or be too short to judge.

English is the lingua franca of product names: SEA sellers write "Wireless Keyboard
Mechanical" or "Coupon bond 80gsm 500 sheets" in an Indonesian or Filipino listing as a
matter of course, so with `allow_english` (the default) a non-English record may read as
English. What the filter catches is text in another language altogether (a Portuguese
description in a Vietnamese record, a Malay title filed as Thai).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Sequence

from pipelines.filters import reject

DEFAULT_LANGS = ("en", "id", "ms", "th", "vi", "tl", "pt")


@functools.lru_cache(maxsize=4)
def identifier(langs: tuple[str, ...]):
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError:
        raise ImportError(
            "language identification needs py3langid: pip install 'compass-jax[data]'"
        ) from None
    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    ident.set_languages(list(langs))
    return ident


def texts_to_check(record: dict) -> list[tuple[str, str]]:
    """(text, expected language) pairs; a pair record ("th>en") checks each side."""
    query_lang, _, positive_lang = record["lang"].partition(">")
    return [(record["query"], query_lang), (record["positive"], positive_lang or query_lang)]


def langid_filter(
    records: Iterable[dict],
    *,
    langs: Sequence[str] = DEFAULT_LANGS,
    min_chars: int = 25,
    min_confidence: float = 0.6,
    confusable: Sequence[Sequence[str]] = (("id", "ms"),),
    allow_english: bool = True,
    stats: Counter | None = None,
) -> tuple[list[dict], list[dict]]:
    ident = identifier(tuple(sorted(langs)))
    groups = {lang: set(group) for group in confusable for lang in group}
    stats = stats if stats is not None else Counter()
    kept, rejects = [], []
    for rec in records:
        bad = None
        for text, expected in texts_to_check(rec):
            letters = sum(c.isalpha() for c in text)
            if expected not in langs or letters < min_chars:
                stats["skipped_short_or_unknown"] += 1
                continue
            found, confidence = ident.classify(text)
            if found == expected:
                stats["agree"] += 1
            elif found in groups.get(expected, ()):
                stats["agree_confusable"] += 1
            elif allow_english and found == "en":
                stats["english_allowed"] += 1
            elif confidence < min_confidence:
                stats["uncertain"] += 1
            else:
                bad = f"language {found} ({confidence:.2f}) where {expected} was expected"
                break
        if bad:
            rejects.append(reject(rec, "langid", bad))
        else:
            kept.append(rec)
    return kept, rejects

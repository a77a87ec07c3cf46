"""Translation pairs fit for retrieval: each rule drops or repairs one hazard of UI catalogs.

A pair is `(english, target)`. In order, a pair is dropped when it is
  fuzzy        marked `#, fuzzy` (a guess the translators have not confirmed)
  empty        untranslated (empty target)
  placeholder  either side holds a format placeholder (`%(name)s`, `%s`, `%d`, `{0}`, `{name}`,
               `${x}`, `%1`): what fills it is unknown, and a half-sentence is not a translation
  markup       HTML/XML tags or entities, reST/Markdown markup, backquotes
  code         URLs, e-mail addresses, identifiers (`snake_case`, `module.name`)
  short        English under `min_chars` characters or target under 2, or no letter on a side
  long         either side over `max_chars` characters
  mismatched   one side over `max_ratio` times as long as the other (a partial translation, or
               an abbreviation: "Would you like to delete it anyway?" -> "Hapus saja?")
  identical    the same text on both sides once normalised (a name left as is, or a copy)
Accelerator markers (`&File`, `_Open`, `(_F)`) are removed and whitespace collapsed before the
checks. Then `dedupe` keeps, in the given order, only the first pair of each normalised English
text and of each normalised target, so every text of the result has exactly one translation:
many-to-one translations ("Delete" and "Remove" both "Hapus") would make retrieval ambiguous.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from compass_jax.data.text_hash import normalize_text

MIN_CHARS = 4
MAX_CHARS = 200
MAX_RATIO = 3.0

_PLACEHOLDER = re.compile(
    r"%(?:\([^)]*\))?[-#0 +]*(?:\d+|\*)?(?:\.\d+)?[sdifgeEuxXcr]"  # printf / Python %
    r"|%\d"  # Qt %1
    r"|\{[^{}\s]*\}"  # str.format, ICU {0}
    r"|\$\{?\w+\}?"  # shell / JS templates
)
_MARKUP = re.compile(
    r"</?[A-Za-z!][^>]*>"  # tags
    r"|&(?:[A-Za-z]+|#\d+|#x[0-9A-Fa-f]+);"  # entities
    r"|`|\*\*|\]\(|:[a-z]+:`"  # reST / Markdown
)
_CODE = re.compile(
    r"https?://|www\.|\S+@\S+\.\w+"  # URLs, e-mail
    r"|\w_\w|[a-z]\w*\.[a-z]\w{2,}"  # snake_case, dotted names (not "e.g.")
)
_ACCELERATOR = re.compile(r"\(\s*[&_]\w\s*\)|(?<![\w&])[&_](?=\w)")
_SPACE = re.compile(r"\s+")


def tidy(text: str) -> str:
    """`text` without accelerator markers, whitespace collapsed."""
    return _SPACE.sub(" ", _ACCELERATOR.sub("", text)).strip()


def reject_reason(
    english: str,
    target: str,
    *,
    fuzzy: bool = False,
    min_chars: int = MIN_CHARS,
    max_chars: int = MAX_CHARS,
    max_ratio: float = MAX_RATIO,
) -> str | None:
    """The first rule (module docstring) that drops the tidied pair, or None to keep it."""
    if fuzzy:
        return "fuzzy"
    if not english or not target:
        return "empty"
    both = (english, target)
    if any(_PLACEHOLDER.search(t) for t in both):
        return "placeholder"
    if any(_MARKUP.search(t) for t in both):
        return "markup"
    if any(_CODE.search(t) for t in both):
        return "code"
    if len(english) < min_chars or len(target) < 2:
        return "short"
    if not all(any(c.isalpha() for c in t) for t in both):
        return "short"
    shorter, longer = sorted((len(english), len(target)))
    if longer > max_chars:
        return "long"
    if longer > max_ratio * shorter and longer >= 3 * min_chars:
        return "mismatched"
    if normalize_text(english) == normalize_text(target):
        return "identical"
    return None


def clean_pairs(
    entries: Iterable[tuple[str, str, bool]],
    counts: Counter | None = None,
    **rules,
) -> list[tuple[str, str]]:
    """Tidied `(english, target)` pairs of `(english, target, fuzzy)` entries that pass every
    rule, in input order; `counts[reason]` gains one per dropped entry (`kept` for the rest)."""
    counts = Counter() if counts is None else counts
    kept = []
    for english, target, fuzzy in entries:
        english, target = tidy(english), tidy(target)
        reason = reject_reason(english, target, fuzzy=fuzzy, **rules)
        counts[reason or "kept"] += 1
        if reason is None:
            kept.append((english, target))
    return kept


def dedupe(pairs: Iterable[tuple[str, str]], counts: Counter | None = None) -> list[int]:
    """Indices of the pairs kept: the first pair of each normalised English text and of each
    normalised target (in input order); `counts["duplicate"]` gains one per pair dropped."""
    seen_english, seen_target, keep = set(), set(), []
    for i, (english, target) in enumerate(pairs):
        e, t = normalize_text(english), normalize_text(target)
        if e in seen_english or t in seen_target:
            if counts is not None:
                counts["duplicate"] += 1
            continue
        seen_english.add(e)
        seen_target.add(t)
        keep.append(i)
    return keep

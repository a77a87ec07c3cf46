"""Which writing system a text is in, by counting letters per Unicode script block."""

from __future__ import annotations

import unicodedata

# Languages whose text must be mostly in one script (the others are Latin).
EXPECTED_SCRIPT = {"th": "thai", "zh": "han", "ja": "han", "ko": "hangul", "ar": "arabic"}


def script_of(char: str) -> str | None:
    if not char.isalpha():
        return None
    code = ord(char)
    if 0x0E00 <= code <= 0x0E7F:
        return "thai"
    if 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF:
        return "han"
    if 0xAC00 <= code <= 0xD7AF:
        return "hangul"
    if 0x0600 <= code <= 0x06FF:
        return "arabic"
    if "LATIN" in unicodedata.name(char, ""):
        return "latin"
    return "other"


def script_share(text: str) -> dict[str, float]:
    counts: dict[str, int] = {}
    for c in text:
        s = script_of(c)
        if s:
            counts[s] = counts.get(s, 0) + 1
    total = sum(counts.values())
    return {s: n / total for s, n in counts.items()} if total else {}


def expected_script(lang: str) -> str:
    return EXPECTED_SCRIPT.get(lang.split("-")[0], "latin")

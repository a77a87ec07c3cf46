"""How shoppers mistype: dropped or doubled letters, swapped neighbours, abbreviations
("utk", "yg", "w/"), Vietnamese and Portuguese typed without diacritics, Thai without tone
marks. Every edit draws from the `rng` passed in."""

from __future__ import annotations

import re
import unicodedata

THAI_TONE_MARKS = "\u0e48\u0e49\u0e4a\u0e4b"
_LATIN_WORD = re.compile(r"[A-Za-zÀ-ɏḀ-ỿ]{4,}")


def strip_accents(text: str) -> str:
    """'Áo thun màu đen' -> 'Ao thun mau den' (đ has no decomposition, so it is mapped)."""
    text = text.replace("đ", "d").replace("Đ", "D")
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize(
        "NFC", "".join(c for c in decomposed if not unicodedata.combining(c))
    )


def drop_thai_tones(text: str, rng, rate: float) -> str:
    return "".join(c for c in text if c not in THAI_TONE_MARKS or rng.random() >= rate)


def typo(word: str, rng) -> str:
    """One keyboard slip in a word of 4+ letters."""
    i = int(rng.integers(1, len(word) - 1))
    kind = int(rng.integers(3))
    if kind == 0:  # dropped letter
        return word[:i] + word[i + 1 :]
    if kind == 1:  # doubled letter
        return word[:i] + word[i] + word[i:]
    return word[: i - 1] + word[i] + word[i - 1] + word[i + 1 :]  # swapped neighbours


def add_noise(text: str, lang_doc: dict, rng) -> str:
    rules = lang_doc["misspell"]
    for full, short in rules.get("abbrev", {}).items():
        if full in text and rng.random() < 0.6:
            text = text.replace(full, short)
    if rules.get("strip_accents", 0) and rng.random() < rules["strip_accents"]:
        text = strip_accents(text)
    if rules.get("thai_tone_drop", 0):
        text = drop_thai_tones(text, rng, rules["thai_tone_drop"])
    words = list(_LATIN_WORD.finditer(text))
    if words and rng.random() < 0.7:
        m = words[int(rng.integers(len(words)))]
        text = text[: m.start()] + typo(m.group(), rng) + text[m.end() :]
    return text

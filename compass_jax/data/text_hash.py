"""Stable 32-bit text hashes for the duplicate mask of CAM (and dedup).

The hash is of a normalised form (NFKC, case-folded, whitespace collapsed), so the same product
title written twice with different spacing or case is recognised as the same text.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

_SPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def text_hash(text: str) -> int:
    """A signed int32 (JAX's default integer) from blake2b of the normalised text."""
    digest = hashlib.blake2b(normalize_text(text).encode("utf-8"), digest_size=4).digest()
    return int.from_bytes(digest, "little", signed=True)

"""Gettext catalogs as plain messages: a .po parser and a .mo reader, strict where it matters.

Catalogs in the wild carry template headers (`PO-Revision-Date: YEAR-MO-DA`), more plural forms
than their header declares, and wrapped comments; general-purpose readers refuse some of these
or print warnings. Here a message is what the file says, and judging it is left to the caller.
"""

from __future__ import annotations

import dataclasses
import gettext
import re
import struct

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}
_ESCAPE = re.compile(r"\\(.)")
_KEYWORD = re.compile(r"^(msgctxt|msgid_plural|msgid|msgstr(?:\[(\d+)\])?)\s+(\".*\")\s*$")


class CatalogError(ValueError):
    """A catalog file that cannot be read; the message names the file (and line)."""


@dataclasses.dataclass
class Message:
    msgid: str
    strings: list[str]  # msgstr, or msgstr[0..n-1] for a plural message
    plural: str | None = None  # msgid_plural
    context: str | None = None
    fuzzy: bool = False
    comments: list[str] = dataclasses.field(default_factory=list)  # extracted (`#.`) comments


@dataclasses.dataclass
class Catalog:
    messages: list[Message]  # the header (msgid "") left out
    headers: dict[str, str]

    def singular_index(self) -> int:
        """Which of a plural message's strings is used for n = 1 (`Plural-Forms`)."""
        forms = self.headers.get("Plural-Forms", "")
        found = re.search(r"plural\s*=\s*([^;]+)", forms)
        return int(gettext.c2py(found.group(1).strip())(1)) if found else 0


def unescape(text: str) -> str:
    """C escapes (`\\n`, `\\"`, `\\\\`) resolved, as in a .po string."""
    return _ESCAPE.sub(lambda m: _ESCAPES.get(m[1], m[1]), text)


def _unquote(token: str) -> str:
    return unescape(token[1:-1])


def _headers(text: str) -> dict[str, str]:
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def parse_po(text: str, path: str = "<po>") -> Catalog:
    """The messages of .po `text` (obsolete `#~` entries left out)."""
    messages, header = [], ""
    fields: dict[str, str] = {}
    flags: set[str] = set()
    comments: list[str] = []
    last = None

    def flush():
        nonlocal fields, flags, comments, header
        if "msgid" in fields:
            plural = sorted((int(k[7:-1]), v) for k, v in fields.items() if k.startswith("msgstr["))
            strings = [v for _, v in plural] if plural else [fields.get("msgstr", "")]
            if fields["msgid"] == "" and "msgctxt" not in fields:
                header = strings[0]
            else:
                plural_id, context = fields.get("msgid_plural"), fields.get("msgctxt")
                fuzzy = "fuzzy" in flags
                messages.append(
                    Message(fields["msgid"], strings, plural_id, context, fuzzy, comments)
                )
        fields, flags, comments = {}, set(), []

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#~"):
            continue
        if line.startswith("#"):
            if any(k.startswith("msgstr") for k in fields):
                flush()
            if line.startswith("#,"):
                flags |= {f.strip() for f in line[2:].split(",")}
            elif line.startswith("#."):
                comments.append(line[2:].strip())
            continue
        if line.startswith('"'):
            if last not in fields or not line.endswith('"'):
                raise CatalogError(f"{path}:{number}: string outside a message")
            fields[last] += _unquote(line)
            continue
        found = _KEYWORD.match(line)
        if not found:
            raise CatalogError(f"{path}:{number}: not a gettext line: {line[:60]!r}")
        keyword = found.group(1)
        if keyword in ("msgctxt", "msgid") and any(k.startswith("msgstr") for k in fields):
            flush()
        fields[keyword] = _unquote(found.group(3))
        last = keyword
    flush()
    return Catalog(messages, _headers(header))


def parse_mo(data: bytes, path: str = "<mo>") -> Catalog:
    """The messages of compiled catalog `data` (msgfmt leaves fuzzy entries out)."""
    magic = data[:4]
    order = {b"\xde\x12\x04\x95": "<", b"\x95\x04\x12\xde": ">"}.get(magic)
    if order is None:
        raise CatalogError(f"{path}: not a .mo file (magic {magic.hex()})")
    count, originals, translations = struct.unpack_from(f"{order}3I", data, 8)

    def string(table: int, i: int) -> bytes:
        length, offset = struct.unpack_from(f"{order}2I", data, table + 8 * i)
        return data[offset : offset + length]

    raw = [(string(originals, i), string(translations, i)) for i in range(count)]
    headers = _headers(next((t.decode("utf-8", "replace") for o, t in raw if o == b""), ""))
    charset = re.search(r"charset=([\w-]+)", headers.get("Content-Type", ""))
    encoding = charset.group(1) if charset else "utf-8"
    messages = []
    for original, translation in raw:
        if original == b"":
            continue
        source = original.decode(encoding)
        context, _, source = source.rpartition("\x04")
        msgid, _, plural = source.partition("\x00")
        messages.append(Message(msgid, translation.decode(encoding).split("\x00"),
                                plural or None, context or None))  # fmt: skip
    return Catalog(messages, headers)


def read_catalog_file(path: str) -> Catalog:
    """A .po or .mo file's catalog; a `CatalogError` names the file (and line)."""
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".mo"):
        return parse_mo(data, path)
    try:
        return parse_po(data.decode("utf-8"), path)
    except UnicodeDecodeError as e:
        raise CatalogError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None

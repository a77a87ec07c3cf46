"""A phrase-table translator built from the bundled vocabularies, for the offline `template`
backend: category names, product nouns, attribute names and values, and the parallel
description sentences map between languages; brands, numbers and unknown words are kept.
It stands in for a model in tests and the default run; it is not a general translator."""

from __future__ import annotations

import functools

from pipelines.catalog.vocab import Vocabulary

MAX_WORDS = 6


@functools.lru_cache(maxsize=4)
def phrase_table(vocab: Vocabulary) -> dict[str, dict[str, tuple]]:
    """lang -> casefolded phrase -> concept, where a concept renders in any language."""
    table: dict[str, dict[str, tuple]] = {}
    for lang, doc in vocab.langs.items():
        phrases: dict[str, tuple] = {}

        def add(text, concept, phrases=phrases):
            phrases.setdefault(text.casefold(), concept)

        for key, names in doc["categories"].items():
            for i, name in enumerate(names):
                add(name, ("category", key, i))
        for key, name in doc["attribute_names"].items():
            add(name, ("attribute", key))
        for key, value in doc["values"].items():
            for form, text in enumerate(value if isinstance(value, list) else [value]):
                add(text, ("value", key, form))
        for section in ("openers", "spec_headers", "benefits", "closers"):
            for i, sentence in enumerate(doc["description"][section]):
                add(sentence, ("sentence", section, i))
        for word in doc["title"]["promo"] + doc["title"]["extras"]:
            add(word, ("drop",))  # seller filler has no counterpart: leave it out
        table[lang] = phrases
    return table


def render_concept(vocab: Vocabulary, concept: tuple, lang: str) -> str:
    doc = vocab.langs[lang]
    kind = concept[0]
    if kind == "category":
        names = doc["categories"][concept[1]]
        return names[min(concept[2], len(names) - 1)]
    if kind == "attribute":
        return doc["attribute_names"][concept[1]]
    if kind == "value":
        return vocab.value_text(concept[1], lang, feminine=bool(concept[2]))
    if kind == "sentence":
        return doc["description"][concept[1]][concept[2]]
    return ""


def translate_line(vocab: Vocabulary, line: str, source: str, target: str) -> str:
    table = phrase_table(vocab)[source]
    if line.strip().casefold() in table:
        return render_concept(vocab, table[line.strip().casefold()], target)
    prefix = ""
    for bullet in ("- ", "• ", "✔ ", "* "):
        if line.startswith(bullet):
            prefix, line = bullet, line[len(bullet) :]
    if ": " in line:  # "Warna: Hitam" -> "Colour: Black"
        name, _, value = line.partition(": ")
        return (
            prefix
            + f"{translate_line(vocab, name, source, target)}: "
            + translate_line(vocab, value, source, target)
        )
    words, out, i = line.split(), [], 0
    while i < len(words):
        for n in range(min(MAX_WORDS, len(words) - i), 0, -1):
            concept = table.get(" ".join(words[i : i + n]).casefold())
            if concept:
                out.append(render_concept(vocab, concept, target))
                i += n
                break
        else:
            if not words[i].startswith("#"):
                out.append(words[i])
            i += 1
    return prefix + " ".join(w for w in out if w)


def translate_text(vocab: Vocabulary, text: str, source: str, target: str) -> str:
    return "\n".join(translate_line(vocab, line, source, target) for line in text.split("\n"))

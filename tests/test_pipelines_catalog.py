"""The catalog format's validation and the bundled multilingual catalog generator."""

import json
import re
import unicodedata
from collections import Counter, defaultdict

import pytest

from pipelines.catalog.generate import generate_catalog
from pipelines.catalog.schema import CatalogError, read_catalog, validate_record
from pipelines.catalog.vocab import LANGS, load_vocabulary

GOOD = {
    "id": "p1",
    "lang": "id",
    "title": "Kaos Polos Hitam",
    "description": "Bahan katun.",
    "category_path": ["Fashion Pria", "Kaos"],
    "attributes": {"Warna": "Hitam"},
}


def write_lines(path, lines):
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


@pytest.mark.parametrize(
    "bad, line, message",
    [
        ({**GOOD, "id": "p2", "title": ""}, 3, "field 'title' must be a non-empty string"),
        ("{not json", 3, "invalid JSON"),
        ({**GOOD, "id": "p2", "category_ids": ["a"]}, 3, "'category_ids' has 1 levels"),
        ({**GOOD, "id": "p2", "attributes": []}, 3, "field 'attributes' must be an object"),
        ({**GOOD, "id": "p2", "price": -3}, 3, "'price' must be a non-negative number"),
        ({**GOOD, "id": "p2", "lang": "Thai"}, 3, "language code"),
        (GOOD, 3, "duplicate id 'p1' (first on line 1)"),
    ],
)
def test_validation_errors_name_file_and_line(tmp_path, bad, line, message):
    path = write_lines(tmp_path / "catalog.jsonl", [GOOD, "", bad])
    with pytest.raises(CatalogError) as e:
        list(read_catalog(path))
    assert str(e.value).startswith(f"{path}:{line}: ")
    assert message in str(e.value)


def test_invalid_lines_can_be_collected_instead_of_raising(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [GOOD, "{oops", {**GOOD, "id": "p3"}])
    errors = []
    products = list(read_catalog(path, errors))
    assert [p.id for p in products] == ["p1", "p3"]
    assert len(errors) == 1 and errors[0].startswith(f"{path}:2: invalid JSON")


def test_optional_fields_and_defaults():
    p = validate_record(
        {
            **GOOD,
            "attributes": {"RAM": 8, "Waterproof": True, "Ports": ["USB-C", 2]},
            "price": 59900,
        },
        "x:1",
    )
    assert p.group_id == "p1"  # defaults to the id
    assert dict(p.attributes) == {"RAM": "8", "Waterproof": "yes", "Ports": "USB-C, 2"}
    assert p.category_keys == ("Fashion Pria", "Kaos")  # names when no ids


def test_vocabulary_size_and_completeness():
    vocab = load_vocabulary()
    assert len(vocab.leaves) >= 150 and len(vocab.departments) >= 10
    for lang in LANGS:  # every leaf has a name and a noun in every language
        for leaf in vocab.leaves:
            assert vocab.names(leaf.key, lang)[0].strip(), (lang, leaf.key)
    # Thai names are written in Thai script, Vietnamese ones carry Vietnamese diacritics.
    thai = sum(
        any("\u0e00" <= c <= "\u0e7f" for c in vocab.names(leaf.key, "th")[0])
        for leaf in vocab.leaves
    )
    assert thai / len(vocab.leaves) > 0.9
    vi_marks = sum(
        bool(
            re.search(
                "[ăâđêôơưạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ]",
                vocab.names(leaf.key, "vi")[0].casefold(),
            )
        )
        for leaf in vocab.leaves
    )
    assert vi_marks / len(vocab.leaves) > 0.6


def test_portuguese_adjectives_agree_with_the_noun():
    vocab = load_vocabulary()
    assert vocab.is_feminine("Camiseta", "pt") and not vocab.is_feminine("Tênis", "pt")
    assert vocab.value_text("black", "pt", feminine=True) == "Preta"
    assert vocab.value_text("black", "pt", feminine=False) == "Preto"
    assert vocab.value_text("black", "th") == "สีดำ"


@pytest.fixture(scope="module")
def catalog():
    return list(generate_catalog(400, seed=7))


def test_generator_is_deterministic_and_sliceable(catalog):
    again = list(generate_catalog(400, seed=7))
    assert json.dumps(catalog, ensure_ascii=False) == json.dumps(again, ensure_ascii=False)
    part = list(generate_catalog(400, seed=7, start=100, stop=200))
    assert part == [r for r in catalog if 100 <= int(r["group_id"].split("-")[1]) < 200]
    other = list(generate_catalog(400, seed=8, stop=20))
    assert [r["title"] for r in other] != [r["title"] for r in catalog[: len(other)]]


def test_generated_catalog_is_valid_multilingual_and_grouped(catalog):
    for i, raw in enumerate(catalog):
        validate_record(raw, f"generated:{i}")
    langs = Counter(r["lang"] for r in catalog)
    assert set(langs) == set(LANGS)
    assert langs["id"] > langs["en"]  # marketplace sizes
    groups = defaultdict(list)
    for r in catalog:
        groups[r["group_id"]].append(r)
    multi = [g for g in groups.values() if len(g) > 1]
    assert len(multi) / len(groups) > 0.4
    for g in multi:  # the same product: one category, one brand, different languages
        assert len({tuple(r["category_ids"]) for r in g}) == 1
        assert len({r.get("brand") for r in g}) == 1
        assert len({r["lang"] for r in g}) == len(g)


def test_generated_text_is_native(catalog):
    by_lang = defaultdict(list)
    for r in catalog:
        by_lang[r["lang"]].append(r)
    thai = [r for r in by_lang["th"] if any("\u0e00" <= c <= "\u0e7f" for c in r["title"])]
    assert len(thai) / len(by_lang["th"]) > 0.95
    vi = [r for r in by_lang["vi"] if any(unicodedata.decomposition(c) for c in r["title"])]
    assert len(vi) / len(by_lang["vi"]) > 0.8
    # Native attribute names, not English with a language tag.
    assert any("Warna" in r["attributes"] for r in by_lang["id"])
    assert any("สี" in r["attributes"] for r in by_lang["th"])
    assert all("Colour" not in r["attributes"] for r in by_lang["vi"])
    # Seller habits: promotions and bracketed tags appear in some titles.
    assert any(re.search(r"[\[【(✅🔥]", r["title"]) for r in catalog)
    # Local currencies with local rounding: Rupiah in hundreds, Dong in thousands.
    assert all(r["currency"] == "IDR" and r["price"] % 100 == 0 for r in by_lang["id"])
    assert all(r["price"] % 1000 == 0 for r in by_lang["vi"])


def test_data_validate_command(tmp_path, capsys):
    from compass_jax import cli

    good = write_lines(tmp_path / "good.jsonl", [GOOD, {**GOOD, "id": "p2"}])
    assert cli.main(["data", "validate", str(good)]) == 0
    assert json.loads(capsys.readouterr().out) == {"valid": {str(good): 2}}
    bad = write_lines(tmp_path / "bad.jsonl", [GOOD, {**GOOD, "id": "p2", "description": 3}])
    assert cli.main(["data", "validate", str(bad)]) == 2
    assert f"{bad}:2: field 'description' must be a non-empty string" in capsys.readouterr().err

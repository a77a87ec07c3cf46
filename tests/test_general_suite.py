"""The general-domain suite from package translations: catalog parsing, the cleaning rules on a
hand-made catalog with every hazard, and the real build on the installed source packages."""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest

from pipelines.general_suite.catalogs import read_catalog
from pipelines.general_suite.clean import clean_pairs, dedupe
from pipelines.general_suite.gettext_files import parse_mo, parse_po

# A pt_BR-style catalog (singular form 0 for n = 1) with a template header babel refuses.
FIXTURE_PO = r"""# Test catalog.
msgid ""
msgstr ""
"PO-Revision-Date: YEAR-MO-DA HO:MI+ZONE\n"
"Content-Type: text/plain; charset=UTF-8\n"
"Plural-Forms: nplurals=2; plural=(n > 1);\n"

msgid "Save changes"
msgstr "Salvar alterações"

#, fuzzy
msgid "Log out"
msgstr "Entrar"

msgid "Untranslated message"
msgstr ""

#, python-format
msgid "Hello %(name)s, welcome back"
msgstr "Olá %(name)s, bem-vindo"

msgid "Page {0} of the report"
msgstr "Página {0} do relatório"

msgid "Read the <b>manual</b> first"
msgstr "Leia o <b>manual</b> primeiro"

msgid "See https://example.org for more"
msgstr "Veja https://example.org para mais"

msgid "&Open the file"
msgstr "&Abrir o arquivo"

msgid "Delete"
msgstr "Excluir"

msgid "Remove"
msgstr "Excluir"

msgctxt "button"
msgid "delete"
msgstr "Apagar"

msgid "Email"
msgstr "E-mail"

msgid "Internet"
msgstr "Internet"

msgid "OK"
msgstr "OK!"

msgid "Would you like to delete it anyway?"
msgstr "Apagar?"

msgid "One file"
msgid_plural "Many files"
msgstr[0] "Um arquivo"
msgstr[1] "Muitos arquivos"

msgid "The long "
"message, \"quoted\""
msgstr "A mensagem "
"longa, \"citada\""

#. Default: "Add new item"
msgid "heading_add_new_item"
msgstr "Adicionar novo item"

#. Default: "Select an item\nas the default view"
msgid "label_select_default_view"
msgstr "Selecione um item como visão padrão"

#~ msgid "Obsolete entry"
#~ msgstr "Entrada obsoleta"
"""

EXPECTED = [
    ("Save changes", "Salvar alterações"),
    ("Open the file", "Abrir o arquivo"),
    ("Delete", "Excluir"),
    ("Email", "E-mail"),
    ("One file", "Um arquivo"),
    ('The long message, "quoted"', 'A mensagem longa, "citada"'),
    ("Add new item", "Adicionar novo item"),
    ("Select an item as the default view", "Selecione um item como visão padrão"),
]


def test_cleaning_a_catalog_with_every_hazard(tmp_path):
    path = tmp_path / "fixture.po"
    path.write_text(FIXTURE_PO, encoding="utf-8")
    counts = Counter()
    pairs = clean_pairs(read_catalog(str(path)), counts)
    kept = [pairs[i] for i in dedupe(pairs, counts)]
    assert kept == EXPECTED
    assert counts == Counter(kept=10, fuzzy=1, empty=1, placeholder=2, markup=1, code=1,
                             identical=1, short=1, mismatched=1, duplicate=2)  # fmt: skip


def test_plural_singular_follows_the_plural_forms_header(tmp_path):
    """In a catalog whose rule picks form 1 for n = 1, the singular pairs with msgstr[1]."""
    po = FIXTURE_PO.replace("plural=(n > 1)", "plural=(n == 1 ? 1 : 0)")
    path = tmp_path / "odd.po"
    path.write_text(po, encoding="utf-8")
    pairs = dict(clean_pairs(read_catalog(str(path))))
    assert pairs["One file"] == "Muitos arquivos"


def test_po_parser_agrees_with_babel_on_real_catalogs():
    """Every message of the Django, Sphinx and allauth catalogs in our languages, read by our
    parser and by babel's."""
    import contextlib
    import io

    from babel.messages.pofile import read_po

    from pipelines.general_suite.catalogs import catalog_files, find_package

    checked = 0
    for dist, module in (("django", "django"), ("sphinx", "sphinx"), ("django-allauth", "allauth")):
        package = find_package(dist, module)
        for lang in ("id", "th", "vi", "ms", "pt"):
            for rel in catalog_files(package, lang):
                path = os.path.join(package.root, rel)
                with open(path, encoding="utf-8") as f:
                    ours = parse_po(f.read(), path).messages
                with open(path, "rb") as f, contextlib.redirect_stdout(io.StringIO()):
                    theirs = [m for m in read_po(f) if m.id]
                assert len(ours) == len(theirs), path
                for mine, ref in zip(ours, theirs, strict=True):
                    ref_id = ref.id if isinstance(ref.id, str) else ref.id[0]
                    ref_strings = [ref.string] if isinstance(ref.string, str) else ref.string
                    n = len(ref_strings)  # babel drops forms beyond the header's count
                    assert (mine.msgid, mine.strings[:n], mine.fuzzy, mine.context) == (
                        ref_id, list(ref_strings), ref.fuzzy, ref.context), path  # fmt: skip
                checked += len(ours)
    assert checked > 5_000


def test_malformed_catalogs_name_the_file_and_line():
    from pipelines.general_suite.gettext_files import CatalogError

    with pytest.raises(CatalogError, match=r"^x\.po:3: not a gettext line"):
        parse_po('msgid "a"\nmsgstr "b"\nmsgfoo "c"\n', "x.po")
    with pytest.raises(CatalogError, match=r"^x\.po:1: string outside a message"):
        parse_po('"dangling"\n', "x.po")
    with pytest.raises(CatalogError, match=r"^y\.mo: not a \.mo file"):
        parse_mo(b"\x00" * 28, "y.mo")


def test_mo_reader_reads_what_babel_writes():
    import io

    from babel.messages.catalog import Catalog
    from babel.messages.mofile import write_mo

    catalog = Catalog(locale="pt_BR")
    catalog.add("Save", "Salvar")
    catalog.add(("One file", "Many files"), ("Um arquivo", "Muitos arquivos"))
    catalog.add("Open", "Abrir (menu)", context="menu")
    buf = io.BytesIO()
    write_mo(buf, catalog)
    parsed = parse_mo(buf.getvalue())
    got = {(m.msgid, m.plural, m.context): m.strings for m in parsed.messages}
    assert got == {
        ("Save", None, None): ["Salvar"],
        ("One file", "Many files", None): ["Um arquivo", "Muitos arquivos"],
        ("Open", None, "menu"): ["Abrir (menu)"],
    }
    assert parsed.singular_index() == 0  # pt_BR: plural=(n > 1)


# Pool sizes on the pinned source versions (django 5.2, sphinx 9.0, django-allauth 65,
# plone.app.locales 7.0, babel 2.19, pycountry 26.2), less a margin for catalog churn.
MIN_POOL = {"id": 3500, "th": 4500, "vi": 3400, "ms": 1400, "tl": 850, "pt": 5000}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The suite as `compass-jax data general-suite` writes it; the printed path."""
    import contextlib
    import io

    from compass_jax.cli import main

    out = tmp_path_factory.mktemp("general") / "suite"
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert main(["data", "general-suite", "--out", str(out), "--quiet"]) == 0
    return json.loads(printed.getvalue().strip().splitlines()[-1])["suite"]


def test_real_build_counts_and_provenance(built):
    with open(built, encoding="utf-8") as f:
        meta = json.load(f)["metadata"]
    for lang, minimum in MIN_POOL.items():
        info = meta["languages"][lang]
        assert info["pool"] >= minimum, (lang, info["pool"])
        assert info["sampled"] == min(1000, info["pool"])
        assert sum(info["sampled_by_source"].values()) == info["sampled"]
    names = {s["package"] for s in meta["sources"]}
    assert names == {"django", "sphinx", "django-allauth", "plone.app.locales", "babel",
                     "pycountry"}  # fmt: skip
    for source in meta["sources"]:
        assert source["version"] and source["licence"] and source["licence"] != "unknown"
    django = next(s for s in meta["sources"] if s["package"] == "django")
    assert "conf/locale/id/LC_MESSAGES/django.po" in django["files"]["id"]


def test_real_suite_loads_and_is_unambiguous(built):
    from compass_jax.data.text_hash import normalize_text
    from compass_jax.eval import load_suite

    suite = load_suite(built)
    assert {t.name for t in suite.tasks} == {
        f"l10n-{kind}-{lang}-en" for kind in ("bitext", "xling") for lang in MIN_POOL
    }
    for task in suite.tasks:
        if task.type == "bitext":
            for side in ("source", "target"):
                texts = [normalize_text(r[side]) for r in task.records]
                assert len(set(texts)) == len(texts), (task.name, side)
        else:
            corpus = [normalize_text(t) for t in task.corpus]
            assert len(set(corpus)) == len(corpus), task.name
            assert all(set(r["relevant"]) <= set(task.corpus) for r in task.records)


def test_build_is_deterministic_and_cached(built, tmp_path):
    from pipelines.general_suite import general_suite

    first = general_suite(tmp_path)
    assert os.path.dirname(first).startswith(str(tmp_path))
    for name in os.listdir(os.path.dirname(built)):
        a, b = (os.path.join(os.path.dirname(p), name) for p in (built, first))
        with open(a, "rb") as fa, open(b, "rb") as fb:
            assert fa.read() == fb.read(), name
    stamp = os.stat(first).st_mtime_ns
    assert general_suite(tmp_path) == first and os.stat(first).st_mtime_ns == stamp


def test_command_refuses_bad_sizes(tmp_path, capsys):
    from compass_jax.cli import main

    args = ["data", "general-suite", "--out", str(tmp_path / "t"), "--pairs-per-language", "0"]
    assert main(args) == 2
    assert "--pairs-per-language: must be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


def test_stratified_order_takes_strata_in_turn_independent_of_input_order():
    from pipelines.general_suite.pool import Pair, stratified_order

    pairs = [Pair(f"a{i}", f"x{i}", "a") for i in range(4)] + [Pair("b0", "y0", "b")]
    order = stratified_order(pairs, seed=0)
    assert [p.stratum for p in order] == ["a", "b", "a", "a", "a"]
    assert sorted(order, key=lambda p: p.english) == sorted(pairs, key=lambda p: p.english)
    swapped = stratified_order(pairs[3::-1] + pairs[4:], seed=0)
    assert swapped == order
    others = [stratified_order(pairs, seed=s) for s in range(1, 6)]
    assert any(o != order for o in others)


def test_a_missing_source_package_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    from compass_jax.cli import main
    from pipelines.general_suite import pool

    monkeypatch.setattr(pool, "SOURCES", (*pool.SOURCES, ("no-such-dist", "no_such_module")))
    assert main(["data", "general-suite", "--out", str(tmp_path / "s"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("compass-jax data general-suite: error: source package 'no-such-dist' is not "
                   "installed: pip install 'compass-jax[data]'")  # fmt: skip

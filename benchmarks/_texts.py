"""Synthetic multilingual e-commerce texts for the embedding benchmarks: product titles (70%) and
search queries (30%) in English, Indonesian, Vietnamese, Thai and Portuguese, with the long tail
of lengths real listings have (0-10 attribute phrases, keyword stuffing)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BRANDS = (
    "Samsung", "Xiaomi", "Apple", "Nike", "Adidas", "Uniqlo", "Philips", "Sharp", "Panasonic",
    "Logitech", "Oppo", "Vivo", "Realme", "Lenovo", "Asus", "Sony", "Wardah", "Emina", "Maybelline",
    "Innisfree", "Tupperware", "Lock&Lock", "Cosrx", "Skintific", "Baseus", "Anker", "JBL",
    "Eiger", "Converse", "Havaianas", "Natura", "Boticário", "Lactogrow", "Pampers", "Huggies",
)  # fmt: skip

# Per language: products, adjectives, colours, extras (attributes / marketing phrases) and query
# openers. Titles glue a brand, a product and a random number of the rest together.
# fmt: off
LANGUAGES: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "products": (
            "wireless earbuds", "running shoes", "phone case", "power bank", "rice cooker",
            "face serum", "laptop backpack", "mechanical keyboard", "baby diapers", "yoga mat",
            "air fryer", "smart watch", "sunscreen lotion", "cotton t-shirt", "gaming mouse",
        ),
        "adjectives": (
            "cheap", "original", "waterproof", "lightweight", "portable", "premium", "new",
            "best seller", "unisex", "ergonomic", "fast charging", "anti-slip", "organic",
        ),
        "colors": ("black", "white", "navy blue", "pink", "grey", "red", "beige", "olive green"),
        "extras": (
            "free shipping", "official store", "1 year warranty", "bundle pack of 3",
            "limited edition 2024", "with gift box", "ready stock ships today",
            "compatible with iPhone and Android", "size S M L XL XXL", "100% authentic",
            "bluetooth 5.3 with noise cancelling", "for men and women", "cash on delivery",
            "BPA free food grade material", "long battery life up to 40 hours",
        ),
        "openers": ("best", "buy", "where to buy", "cheapest", "promo", "review"),
    },
    "id": {
        "products": (
            "sepatu lari", "tas ransel laptop", "casing hp", "rice cooker mini", "serum wajah",
            "popok bayi", "kaos katun", "jam tangan pintar", "headset bluetooth", "kerudung instan",
            "gamis wanita", "panci anti lengket", "sabun cuci muka", "celana jeans pria",
        ),
        "adjectives": (
            "murah", "original", "anti air", "ringan", "premium", "terbaru", "termurah",
            "kekinian", "tebal", "lembut", "awet", "bergaransi",
        ),
        "colors": ("hitam", "putih", "biru dongker", "merah muda", "abu-abu", "coklat susu"),
        "extras": (
            "gratis ongkir", "bisa COD", "garansi resmi 1 tahun", "ready stok kirim hari ini",
            "isi 3 pcs", "promo 12.12", "cocok untuk pria dan wanita", "ukuran S M L XL",
            "bahan katun combed 30s", "bpom dan halal", "untuk kulit berminyak dan berjerawat",
            "toko resmi", "diskon besar akhir tahun", "kualitas ekspor",
        ),
        "openers": ("jual", "cari", "harga", "rekomendasi", "beli"),
    },
    "vi": {
        "products": (
            "giày chạy bộ", "tai nghe không dây", "ốp lưng điện thoại", "nồi cơm điện",
            "kem chống nắng", "balo laptop", "áo thun cotton", "sữa rửa mặt", "bỉm trẻ em",
            "đồng hồ thông minh", "nồi chiên không dầu", "quần jean nam",
        ),
        "adjectives": (
            "giá rẻ", "chính hãng", "chống nước", "siêu nhẹ", "cao cấp", "mới nhất", "bán chạy",
            "dễ thương", "bền đẹp",
        ),
        "colors": ("màu đen", "màu trắng", "xanh navy", "hồng pastel", "xám", "be"),
        "extras": (
            "miễn phí vận chuyển", "bảo hành 12 tháng", "hàng có sẵn giao ngay",
            "combo 3 hộp", "freeship toàn quốc", "cho nam và nữ", "size S M L XL",
            "hàng nhập khẩu chính ngạch", "thanh toán khi nhận hàng", "pin trâu dùng cả ngày",
            "phù hợp da dầu mụn", "quà tặng kèm",
        ),
        "openers": ("mua", "giá", "tìm", "review", "shop bán"),
    },
    "th": {
        "products": (
            "รองเท้าวิ่ง", "หูฟังไร้สาย", "เคสโทรศัพท์", "หม้อหุงข้าว", "ครีมกันแดด",
            "กระเป๋าเป้", "เสื้อยืดผ้าฝ้าย", "ผ้าอ้อมเด็ก", "นาฬิกาอัจฉริยะ", "หม้อทอดไร้น้ำมัน",
        ),
        "adjectives": ("ราคาถูก", "ของแท้", "กันน้ำ", "น้ำหนักเบา", "พรีเมียม", "รุ่นใหม่", "ขายดี"),
        "colors": ("สีดำ", "สีขาว", "สีกรมท่า", "สีชมพู", "สีเทา"),
        "extras": (
            "ส่งฟรี", "รับประกัน 1 ปี", "พร้อมส่ง", "เก็บเงินปลายทาง", "แพ็ค 3 ชิ้น",
            "สำหรับผู้ชายและผู้หญิง", "ไซส์ S M L XL", "ร้านค้าทางการ", "ลดราคาพิเศษ",
        ),
        "openers": ("ซื้อ", "ราคา", "รีวิว", "หา"),
    },
    "pt": {
        "products": (
            "tênis de corrida", "fone de ouvido sem fio", "capinha de celular", "panela elétrica",
            "protetor solar", "mochila para notebook", "camiseta de algodão", "fralda infantil",
            "relógio inteligente", "fritadeira elétrica", "sérum facial", "calça jeans masculina",
        ),
        "adjectives": (
            "barato", "original", "à prova d'água", "leve", "premium", "lançamento",
            "mais vendido", "confortável", "resistente",
        ),
        "colors": ("preto", "branco", "azul marinho", "rosa", "cinza", "bege"),
        "extras": (
            "frete grátis", "garantia de 1 ano", "pronta entrega", "kit com 3 unidades",
            "loja oficial", "para homens e mulheres", "tamanho P M G GG",
            "pagamento na entrega", "bateria de longa duração", "produto importado",
            "para pele oleosa e acneica", "brinde exclusivo",
        ),
        "openers": ("comprar", "preço", "onde comprar", "melhor", "promoção"),
    },
}
# fmt: on
UNITS = ("ml", "gr", "kg", "GB", "mAh", "W", "cm", "pcs", "L")


def _pick(rng: np.random.Generator, items: Sequence[str], k: int = 1) -> list[str]:
    return [items[i] for i in rng.choice(len(items), size=min(k, len(items)), replace=False)]


def make_query(rng: np.random.Generator, words: dict[str, tuple[str, ...]]) -> str:
    """A short search query: opener, adjective, product, sometimes a colour or a brand."""
    parts = [*_pick(rng, words["openers"]), *_pick(rng, words["adjectives"])]
    parts += _pick(rng, words["products"])
    if rng.random() < 0.6:
        parts += _pick(rng, words["colors"])
    if rng.random() < 0.4:
        parts.insert(1, *_pick(rng, BRANDS))
    if rng.random() < 0.3:
        parts += _pick(rng, words["extras"])
    return " ".join(parts)


def make_title(rng: np.random.Generator, words: dict[str, tuple[str, ...]]) -> str:
    """A product title: brand, adjectives, product, spec, colour and 0-10 attribute phrases."""
    spec = f"{int(rng.integers(1, 2000))}{UNITS[int(rng.integers(len(UNITS)))]}"
    n_extras = int(min(rng.geometric(0.3) - 1, 10))
    parts = [
        *_pick(rng, BRANDS),
        *_pick(rng, words["adjectives"], int(rng.integers(1, 3))),
        *_pick(rng, words["products"]),
        spec,
        *_pick(rng, words["colors"]),
    ]
    extras = _pick(rng, words["extras"], n_extras)
    if n_extras > len(words["extras"]) // 2:  # long listings repeat keywords (SEO stuffing)
        extras += _pick(rng, words["products"], 2) + _pick(rng, words["adjectives"], 2)
    return " ".join(parts) + (" - " + ", ".join(extras) if extras else "")


def make_texts(n: int, seed: int = 0) -> list[str]:
    """`n` deterministic e-commerce titles (70%) and queries (30%) across five languages."""
    rng = np.random.default_rng(seed)
    names = sorted(LANGUAGES)
    texts = []
    for _ in range(n):
        words = LANGUAGES[names[int(rng.integers(len(names)))]]
        texts.append(make_query(rng, words) if rng.random() < 0.3 else make_title(rng, words))
    return texts

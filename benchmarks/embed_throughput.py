"""Embedding throughput: compass-jax's jitted embed path vs PyTorch `transformers`, on this CPU.

For each model and precision it measures sentences per second of

* compass-jax: `Encoder.encode` (tokenise, sort by length, pad to a bucket length, run the jitted
  `embed`, collect), and
* PyTorch: `AutoModel` in eval mode under `torch.inference_mode()`, fed the same token ids (the
  same `enc.tokenize` call), padded per batch to its own longest sequence (dynamic padding, as
  sentence-transformers does), then mean pooling + L2 normalisation,

over the same length-sorted batches of the same texts, with the same batch size, maximum length
and thread count; both timings include tokenisation. Each side first runs every batch once (JAX
compiles one program per bucket shape then; reported as warm-up), then `--repeats` rounds run
each batch on every side back to back, and each batch's best time counts, so short bursts of load
from other processes mostly drop out. Sustained load does not, and it slows torch (OpenMP) more
than XLA: trust only (model, dtype) results whose `contention` share is near 0.

It also reports model FLOP/s (forward matmul FLOPs of the padded shapes each side ran) against
matmul peaks measured in the same run, the padding efficiency of each side, the mean cosine
between the two implementations' embeddings, and how much CPU other processes used meanwhile.

PyTorch bfloat16 runs both `model.to(torch.bfloat16)` and `torch.autocast` on the float32 model;
the faster one is the peer. A bf16 variant far slower than compass-jax (`--slow-factor`,
`--slow-pass-s`; CPUs without bf16 matmul units run it 5-30x slower than fp32) is timed once on
every k-th batch, a subset stratified over lengths (the JSON says so).

Run (about 10 minutes on 2 idle cores; progress on stderr, JSON on stdout):

    python benchmarks/embed_throughput.py --out /tmp/embed_throughput.json
    python benchmarks/embed_throughput.py --models all-MiniLM-L6-v2 --dtypes float32 --n 256
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

DEFAULT_MODELS = ("all-MiniLM-L6-v2", "multilingual-e5-small")
PEAK_SIZE = 2048
# dtype -> the (compass-jax, torch) matmul peaks its model FLOP/s are compared with
PEAKS_FOR = {
    "float32": ("jax_float32", "torch_float32"),
    "bfloat16": ("jax_bfloat16_f32acc", "torch_bfloat16"),
}

# ---------------------------------------------------------------------------------------------
# Synthetic multilingual e-commerce texts
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# Machine, threads, timing helpers
# ---------------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[embed_throughput] {message}", file=sys.stderr, flush=True)


def pin_threads(threads: int) -> str:
    """Restrict the process to `threads` CPUs before JAX starts (XLA sizes its pool from the
    schedulable CPUs); a no-op when `threads` covers them all."""
    cpus = sorted(os.sched_getaffinity(0))
    if threads >= len(cpus):
        return (
            f"threads ({threads}) >= schedulable CPUs ({len(cpus)}): no affinity change; XLA's "
            "CPU client uses one intra-op thread per schedulable CPU by default"
        )
    os.sched_setaffinity(0, cpus[:threads])
    return f"process pinned to CPUs {cpus[:threads]} (sched_setaffinity) so XLA uses {threads}"


def machine_info(threads_note: str) -> dict[str, Any]:
    import jax
    import torch
    import transformers

    from compass_jax.machine import cpu_description

    return {
        **cpu_description(),
        "cpu_count": os.cpu_count(),
        "schedulable_cpus": len(os.sched_getaffinity(0)),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "transformers": transformers.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "thread_alignment": threads_note,
        "load_average_at_start": os.getloadavg(),
    }


def cpu_snapshot() -> tuple[float, float, float, float]:
    """(wall s, machine busy CPU s, machine steal s, this process's CPU s) from /proc/stat."""
    with open("/proc/stat", encoding="utf-8") as f:
        user, nice, system, _, _, irq, softirq, steal = map(int, f.readline().split()[1:9])
    hz = os.sysconf("SC_CLK_TCK")
    own = os.times()
    busy = (user + nice + system + irq + softirq) / hz
    return time.perf_counter(), busy, steal / hz, own.user + own.system


def contention_since(start: tuple[float, float, float, float]) -> dict[str, float]:
    """CPU used by other processes (and stolen by the hypervisor) since `start`, as a share of
    the CPUs' time: anything well above 0 means the timings were disturbed."""
    end = cpu_snapshot()
    wall, busy, steal, own = (b - a for a, b in zip(start, end, strict=True))
    capacity = wall * len(os.sched_getaffinity(0))
    return {
        "wall_s": round(wall, 1),
        "other_processes_cpu_share": round(max(0.0, busy - own) / capacity, 3),
        "steal_share": round(steal / capacity, 3),
    }


def wall_times(fn: Callable[[], Any], repeats: int) -> list[float]:
    """Wall times of `repeats` calls of `fn` (the caller warms up)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def gflops(flop: float, seconds: float) -> float:
    return round(flop / seconds / 1e9, 2)


# ---------------------------------------------------------------------------------------------
# Matmul peaks
# ---------------------------------------------------------------------------------------------


def jax_matmul_peak(dtype: str, repeats: int, upcast: bool = False) -> float:
    """GFLOP/s of a jitted 2048^2 jnp.dot (bf16 inputs accumulate to f32)."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    a, b = (jnp.asarray(rng.standard_normal((PEAK_SIZE,) * 2), dtype) for _ in range(2))
    if upcast:  # bf16 storage, f32 compute: what a CPU without bf16 dot units does best
        dot = jax.jit(lambda x, y: jnp.dot(x.astype(jnp.float32), y.astype(jnp.float32)))
    else:
        dot = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
    dot(a, b).block_until_ready()
    times = wall_times(lambda: dot(a, b).block_until_ready(), repeats)
    return gflops(2 * PEAK_SIZE**3, min(times))


def torch_matmul_peak(dtype: str, repeats: int, size: int = PEAK_SIZE, nt: bool = True) -> float:
    """GFLOP/s of a `size`^2 torch matmul; `nt`: `a @ b.T`, the layout `nn.Linear` runs."""
    import torch

    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=gen).to(getattr(torch, dtype)) for _ in range(2))
    rhs = b.T if nt else b
    with torch.inference_mode():
        a @ rhs
        times = wall_times(lambda: a @ rhs, repeats)
    return gflops(2 * size**3, min(times))


def measure_peaks(repeats: int = 10) -> dict[str, Any]:
    """Matmul GFLOP/s, best of `repeats` (4 for the slow torch bf16 one)."""
    log("measuring matmul peaks")
    start = cpu_snapshot()
    peaks = {
        "jax_float32": jax_matmul_peak("float32", repeats),
        "jax_bfloat16_f32acc": jax_matmul_peak("bfloat16", repeats),
        "jax_bfloat16_upcast_to_f32": jax_matmul_peak("bfloat16", repeats, upcast=True),
        "torch_float32": torch_matmul_peak("float32", repeats),
        "torch_bfloat16": torch_matmul_peak("bfloat16", 4),
        "torch_bfloat16_nn_layout_512": torch_matmul_peak("bfloat16", 2, size=512, nt=False),
    }
    return {**peaks, "contention": contention_since(start)}


def best_peaks(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The best of several peak measurements (at the start and the end of the run)."""
    names = [k for k in runs[0] if k != "contention"]
    return {
        "size": PEAK_SIZE,
        **{k: max(run[k] for run in runs) for k in names},
        "runs": runs,
        "notes": (
            "GFLOP/s, best of the runs; jax: jnp.dot, bf16 with preferred_element_type=float32; "
            "upcast: bf16 inputs converted to f32 inside the jit; torch: a @ b.T (nn.Linear "
            "layout); torch_bfloat16_nn_layout_512: plain a @ b at 512^2, for reference"
        ),
    }


# ---------------------------------------------------------------------------------------------
# Model FLOPs, batches and padding
# ---------------------------------------------------------------------------------------------


def matmul_params_per_layer(cfg) -> int:
    """Weights that take part in matmuls in one encoder layer (q, k, v, o and the MLP)."""
    d, inner = cfg.hidden_size, cfg.num_heads * cfg.head_dim
    kv = cfg.num_kv_heads * cfg.head_dim
    mlp_mats = 3 if cfg.is_decoder else 2
    return d * inner + 2 * d * kv + inner * d + mlp_mats * d * cfg.intermediate_size


def forward_flops(cfg, shapes: Sequence[tuple[int, int]]) -> float:
    """Forward matmul FLOPs for batches of `(rows, padded_length)`: per token and layer,
    2 * matmul params plus 4 * L * (heads * head_dim) for the scores and the weighted values."""
    per_layer_params = matmul_params_per_layer(cfg)
    inner = cfg.num_heads * cfg.head_dim
    total = 0.0
    for rows, length in shapes:
        per_token = 2 * per_layer_params + 4 * length * inner
        total += rows * length * cfg.num_layers * per_token
    return total


def pad_id_of(enc) -> int:
    pad = enc.tokenizer.pad_token_id
    return pad if pad is not None else (enc.cfg.pad_token_id or 0)


def length_sorted_batches(token_ids: Sequence[Sequence[int]], batch_size: int) -> list:
    """Text indices of each batch, by decreasing token length (stable), as `Encoder.encode`
    splits them; both sides run exactly these batches."""
    order = np.argsort([-len(ids) for ids in token_ids], kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def jax_shape(enc, token_ids, rows, batch_size: int, max_length: int) -> tuple[int, int]:
    """The padded shape `Encoder.encode` runs for one batch (bucket length, filler rows)."""
    from compass_jax.data.bucketing import length_buckets
    from compass_jax.encoder import make_batches

    batch = next(
        make_batches(
            [token_ids[r] for r in rows],
            batch_size=batch_size,
            buckets=length_buckets(max_length),
            pad_id=pad_id_of(enc),
        )
    )
    return batch.input_ids.shape


def padding_report(cfg, shapes, real_tokens: int) -> dict[str, Any]:
    padded = int(sum(r * length for r, length in shapes))
    return {
        "padded_tokens": padded,
        "padding_efficiency": round(real_tokens / padded, 4),
        "distinct_shapes": len(set(map(tuple, shapes))),
        "gflop": round(forward_flops(cfg, shapes) / 1e9, 2),
    }


# ---------------------------------------------------------------------------------------------
# Contenders: one call per batch, warmed up, timed batch by batch in interleaved rounds
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Call:
    """One batch: texts in, unit vectors out (tokenisation included)."""

    run: Callable[[], np.ndarray]
    rows: np.ndarray  # text indices
    shape: tuple[int, int]  # the padded (rows, length) it runs
    real_tokens: int


@dataclasses.dataclass
class Contender:
    """One implementation under test: a call per length-sorted batch, and their timings."""

    calls: dict[int, Call]  # batch index -> call
    repeats: int
    info: dict[str, Any]
    vectors: np.ndarray | None = None  # from the warm-up, aligned with `rows`
    warmup: dict[int, float] = dataclasses.field(default_factory=dict)  # batch -> first call s
    rounds: list[dict[int, float]] = dataclasses.field(default_factory=list)

    @property
    def rows(self) -> np.ndarray:
        return np.concatenate([c.rows for c in self.calls.values()])

    def subset(self, keep: Sequence[int], repeats: int) -> Contender:
        return Contender({i: self.calls[i] for i in keep}, repeats, self.info)

    def warm_up(self) -> None:
        vectors = []
        for index, call in self.calls.items():
            start = time.perf_counter()
            vectors.append(call.run())
            self.warmup[index] = time.perf_counter() - start
        self.vectors = np.concatenate(vectors)

    def best(self, index: int) -> float:
        return min(r[index] for r in self.rounds)

    def first_call_overhead_s(self) -> float:
        """Extra time of the first call of each distinct shape (JAX: its compilation)."""
        first = {}
        for index, call in self.calls.items():
            first.setdefault(call.shape, index)
        return sum(self.warmup[i] - self.best(i) for i in first.values())

    def time_call(self, round_: int, index: int) -> None:
        if round_ >= self.repeats or index not in self.calls:
            return
        if len(self.rounds) <= round_:
            self.rounds.append({})
        self.rounds[round_][index] = wall_times(self.calls[index].run, 1)[0]

    def report(self, cfg) -> dict[str, Any]:
        """Throughput from the sum over batches of each batch's best time (robust to bursts of
        background load), and from the best whole round."""
        best = sum(self.best(i) for i in self.calls)
        whole = [sum(r.values()) for r in self.rounds]
        shapes = [c.shape for c in self.calls.values()]
        real = sum(c.real_tokens for c in self.calls.values())
        report = {**self.info, **padding_report(cfg, shapes, real)}
        n = len(self.rows)
        report.update(
            sentences_per_s=round(n / best, 2),
            best_s=round(best, 3),
            sentences_per_s_best_whole_round=round(n / min(whole), 2),
            whole_round_s=[round(t, 3) for t in whole],
            warmup_s=round(sum(self.warmup.values()), 2),
            gflop_per_s=gflops(report["gflop"] * 1e9, best),
        )
        return report


def jax_contender(enc, texts, token_ids, batches, args) -> Contender:
    """`Encoder.encode` on each batch's texts: it re-sorts them, pads to the batch's bucket and
    runs the jitted embed, exactly what one `encode` call over all texts does per batch."""
    _, max_length = enc.tokenize(texts[:1], max_length=args.max_length)
    encode = functools.partial(enc.encode, batch_size=args.batch_size, max_length=args.max_length)
    calls = {}
    for i, rows in enumerate(batches):
        shape = jax_shape(enc, token_ids, rows, args.batch_size, max_length)
        real = sum(len(token_ids[r]) for r in rows)
        calls[i] = Call(functools.partial(encode, [texts[r] for r in rows]), rows, shape, real)
    return Contender(calls, args.repeats, {})


# ---------------------------------------------------------------------------------------------
# PyTorch side
# ---------------------------------------------------------------------------------------------


def torch_variants(dtype: str) -> tuple[str, ...]:
    return ("fp32",) if dtype == "float32" else ("bf16_weights", "autocast_bf16")


def load_torch(path: str, variant: str):
    import torch
    from transformers import AutoModel

    # The BERT pooler is unused by mean pooling (and absent from imported checkpoints).
    model = AutoModel.from_pretrained(path, add_pooling_layer=False).eval()
    return model.to(torch.bfloat16) if variant == "bf16_weights" else model


def torch_encode(model, enc, texts, max_length: int, autocast: bool) -> np.ndarray:
    """The PyTorch peer of `Encoder.encode` for one batch: the same `enc.tokenize` call, padding
    to the batch's longest row, mean pooling + L2 normalisation as sentence-transformers does."""
    import torch

    token_ids, _ = enc.tokenize(texts, max_length=max_length)
    longest = max(map(len, token_ids))
    ids = np.full((len(texts), longest), pad_id_of(enc), np.int64)
    mask = np.zeros((len(texts), longest), np.int64)
    for i, seq in enumerate(token_ids):
        ids[i, : len(seq)], mask[i, : len(seq)] = seq, 1
    ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
    cast = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with torch.inference_mode(), cast:
        hidden = model(input_ids=ids_t, attention_mask=mask_t).last_hidden_state
        weights = mask_t.unsqueeze(-1).to(torch.float32)
        pooled = (hidden.float() * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def torch_contender(model, variant: str, enc, texts, token_ids, batches, args) -> Contender:
    autocast = variant == "autocast_bf16"
    encode = functools.partial(
        torch_encode, model, enc, max_length=args.max_length, autocast=autocast
    )
    calls = {}
    for i, rows in enumerate(batches):
        lengths = [len(token_ids[r]) for r in rows]
        shape = (len(rows), max(lengths))
        calls[i] = Call(
            functools.partial(encode, [texts[r] for r in rows]), rows, shape, sum(lengths)
        )
    return Contender(
        calls, args.repeats, {"attn_implementation": model.config._attn_implementation}
    )


def cut_if_slow(peer: Contender, variant: str, probe_index: int, jax_probe_s: float, args):
    """`peer`, or, for a bf16 variant whose middle batch runs more than `--slow-factor` times
    slower than ours and whose full pass projects past `--slow-pass-s`, every k-th batch of it
    (stratified over lengths, about `--slow-pass-s` of work) timed once. The fp32 peer always
    runs in full: it is the main comparison, and a busy machine can make it look slow."""
    probe = peer.calls[probe_index]
    probe.run()  # warm-up
    probe_s = min(wall_times(probe.run, 2))
    tokens = sum(r * length for r, length in (c.shape for c in peer.calls.values()))
    projected = probe_s * tokens / (probe.shape[0] * probe.shape[1])
    slowdown = probe_s / jax_probe_s
    peer.info.update(
        projected_full_pass_s=round(projected, 1),
        middle_batch_time_vs_ours=round(slowdown, 2),
        batch_stride=1,
    )
    if variant == "fp32" or slowdown <= args.slow_factor or projected <= args.slow_pass_s:
        return peer
    stride = min(math.ceil(projected / args.slow_pass_s), len(peer.calls))
    keep = range(stride // 2, len(peer.calls), stride)
    peer.info.update(batch_stride=stride, subset_batches=len(keep), of_batches=len(peer.calls))
    return peer.subset(keep, repeats=1)


# ---------------------------------------------------------------------------------------------
# One (model, dtype) comparison
# ---------------------------------------------------------------------------------------------


def mean_cosine(ours: Contender, rows: np.ndarray, theirs: np.ndarray) -> dict[str, float]:
    """Row cosines between our embeddings and another implementation's for text `rows`."""
    by_row = np.empty_like(ours.vectors)
    by_row[ours.rows] = ours.vectors
    a, b = by_row[rows], theirs
    cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"mean": round(float(cos.mean()), 6), "min": round(float(cos.min()), 6)}


def time_interleaved(contenders: Sequence[Contender], n_batches: int, repeats: int) -> None:
    """Rounds in which every batch runs on each side back to back, so background load hits both
    sides alike; each side keeps its best time per batch."""
    for round_ in range(repeats):
        log(f"timed round {round_ + 1}/{repeats}")
        for index in range(n_batches):
            for contender in contenders:
                contender.time_call(round_, index)


def run_sides(enc, dtype: str, texts, args) -> tuple[Contender, dict[str, Contender]]:
    """Warm up compass-jax (compiling every bucket) and each torch variant, then time them."""
    token_ids, _ = enc.tokenize(texts, max_length=args.max_length)
    batches = length_sorted_batches(token_ids, args.batch_size)
    ours = jax_contender(enc, texts, token_ids, batches, args)
    log("compass-jax warm-up (compiles each bucket shape)")
    ours.warm_up()
    mid = len(batches) // 2
    jax_probe_s = min(wall_times(ours.calls[mid].run, 2))
    peers = {}
    for variant in torch_variants(dtype):
        log(f"torch {variant} warm-up")
        model = load_torch(enc.path, variant)
        peer = torch_contender(model, variant, enc, texts, token_ids, batches, args)
        peers[variant] = cut_if_slow(peer, variant, mid, jax_probe_s, args)
        peers[variant].warm_up()
    time_interleaved([ours, *peers.values()], len(batches), args.repeats)
    return ours, peers


def compare(name: str, dtype: str, texts, args, torch_fp32) -> dict[str, Any]:
    """Load `name` in `dtype`, time both sides, and report; a model that fails to load is
    reported as skipped. `torch_fp32` keeps each model's torch fp32 (rows, vectors) for the bf16
    agreement check."""
    from compass_jax.encoder import Encoder

    log(f"{name} {dtype}: loading")
    start = cpu_snapshot()
    try:
        enc = Encoder.load(name, dtype=dtype)
    except Exception as e:
        return {"status": "skipped", "error": f"{type(e).__name__}: {e}"}
    ours, peers = run_sides(enc, dtype, texts, args)
    result = summarise(enc, ours, peers)
    tokenize_s = min(wall_times(lambda: enc.tokenize(texts, max_length=args.max_length), 3))
    result["tokenize_all_s"] = round(tokenize_s, 3)
    if "fp32" in peers:
        torch_fp32[name] = (peers["fp32"].rows, peers["fp32"].vectors)
    agreement = {f"vs_torch_{v}": mean_cosine(ours, c.rows, c.vectors) for v, c in peers.items()}
    if name in torch_fp32 and "fp32" not in peers:
        agreement["vs_torch_fp32"] = mean_cosine(ours, *torch_fp32[name])
    result["agreement_cosine"] = agreement
    result["contention"] = contention_since(start)
    return result


def summarise(enc, ours: Contender, peers: dict[str, Contender]) -> dict[str, Any]:
    ours_report = ours.report(enc.cfg)
    ours_report["compile_s_est"] = round(ours.first_call_overhead_s(), 2)
    theirs = {v: c.report(enc.cfg) for v, c in peers.items()}
    best = max(theirs, key=lambda v: theirs[v]["sentences_per_s"])
    return {
        "status": "ok",
        "arch": enc.cfg.arch,
        "layers": enc.cfg.num_layers,
        "hidden": enc.cfg.hidden_size,
        "matmul_params_per_layer": matmul_params_per_layer(enc.cfg),
        "compass_jax": ours_report,
        "torch": theirs,
        "torch_best": best,
        "ratio_ours_over_torch_best": round(
            ours_report["sentences_per_s"] / theirs[best]["sentences_per_s"], 3
        ),
    }


def add_peak_fractions(results: dict[str, Any], peaks: dict[str, Any]) -> None:
    """`pct_of_peak` for every side: its GFLOP/s over its framework's matmul peak for the dtype
    (bf16 compass-jax: the bf16 x bf16 -> f32 dot)."""
    for by_dtype in results.values():
        for dtype, result in by_dtype.items():
            if result["status"] != "ok":
                continue
            jax_peak, torch_peak = PEAKS_FOR[dtype]
            sides = [(result["compass_jax"], jax_peak)]
            sides += [(r, torch_peak) for r in result["torch"].values()]
            for side, peak in sides:
                side["pct_of_peak"] = round(100 * side["gflop_per_s"] / peaks[peak], 1)
                side["peak_used"] = peak


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=512, help="number of texts")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated")
    p.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds; each batch's best counts")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic texts")
    p.add_argument(
        "--slow-factor",
        type=float,
        default=2.0,
        help="a torch bf16 variant this many times slower than ours on the middle batch ...",
    )
    p.add_argument(
        "--slow-pass-s",
        type=float,
        default=10.0,
        help="... whose full pass projects past this runs once on every k-th batch (~this long)",
    )
    p.add_argument("--out", help="also write the JSON to this file")
    return p.parse_args(argv)


def settings(args: argparse.Namespace, texts: Sequence[str]) -> dict[str, Any]:
    return {
        "n_texts": len(texts),
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "threads": args.threads,
        "repeats": args.repeats,
        "seed": args.seed,
        "slow_factor": args.slow_factor,
        "slow_pass_s": args.slow_pass_s,
        "tokenization": "included in the timings on both sides (the same enc.tokenize call)",
        "batching": (
            "texts sorted by token length and split into batches of batch_size, the same for "
            "both sides; compass-jax: Encoder.encode per batch (pads to a bucket: powers of two "
            "from 16, and max_length; the last batch is filled to batch_size); torch: padded to "
            "the batch's own longest row (dynamic padding, as sentence-transformers)"
        ),
        "timing": (
            "one warm-up pass per side (JAX compiles each bucket shape in it), then `repeats` "
            "rounds in which each batch runs on every side back to back; sentences_per_s uses "
            "the sum over batches of each batch's best time, "
            "sentences_per_s_best_whole_round the best round"
        ),
        "flops": (
            "forward matmul FLOPs of the encoder layers on the padded shapes each side ran: "
            "2 * matmul params + 4 * L * heads * head_dim per token and layer (embedding "
            "lookups, norms and pooling excluded); GFLOP/s over the same time as "
            "sentences_per_s, tokenisation included"
        ),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    threads_note = pin_threads(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    start = cpu_snapshot()
    texts = make_texts(args.n, args.seed)
    report: dict[str, Any] = {
        "machine": machine_info(threads_note + f"; torch.set_num_threads({args.threads})"),
        "settings": settings(args, texts),
    }
    first_peaks = measure_peaks()
    results, torch_fp32 = {}, {}
    for name in args.models.split(","):
        results[name] = {
            dtype: compare(name, dtype, texts, args, torch_fp32) for dtype in args.dtypes.split(",")
        }
    peaks = best_peaks([first_peaks, measure_peaks()])
    add_peak_fractions(results, peaks)
    report.update(peak_gflop_per_s=peaks, results=results)
    report["machine"]["load_average_at_end"] = os.getloadavg()
    report["machine"]["contention_whole_run"] = contention_since(start)
    text = json.dumps(report, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return report


if __name__ == "__main__":
    main()

"""`gpu_suite.py`'s embedding phase: texts/s of compass-jax's jitted embed (`Encoder`) against
sentence-transformers (PyTorch) on the same card, both bf16, the same synthetic texts and batch
size.

A random Qwen3-0.6B-sized model is saved by compass-jax's export path with a synthetic
word-level tokenizer, so both sides read one directory and tokenise identically. Each side
embeds the texts once to warm up (our length buckets compile, PyTorch loads its kernels) and
once timed, tokenisation included on both sides. Reported: texts/s and real tokens/s per side,
their ratio, the share of our padded token grid that is padding (sentence-transformers pads each
batch to its longest text), and the cosine between the two sides' embeddings. Not a benchmark
itself; `gpu_suite.py` imports it.
"""

from __future__ import annotations

import gc
import pathlib
import tempfile
import time
from typing import Any

import _gpu_models as gm
import numpy as np
from _gpu_fp8 import cosines
from _gpu_train import qwen3


def _timed(fn) -> tuple[Any, float]:
    tic = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - tic


def padded_share(encoder, texts: list[str], batch: int) -> float:
    """The share of the rows `encoder.encode` computes that is padding (its packed layout)."""
    from compass_jax.data.packing import pack, padding_efficiency

    ids, max_length = encoder.tokenize(texts)
    batches = list(pack(ids, encoder.layout(max_length, batch), pad_id=0))
    return round(1 - padding_efficiency(batches), 4)


def ours(model_dir, texts: list[str], batch: int, tokens: int) -> tuple[np.ndarray, dict]:
    """compass-jax's `Encoder` on the directory in bf16: embeddings and timings."""
    from compass_jax.encoder import Encoder

    encoder = Encoder.load(model_dir, dtype="bfloat16")
    _, warm = _timed(lambda: encoder.encode(texts, batch_size=batch))
    vectors, seconds = _timed(lambda: encoder.encode(texts, batch_size=batch))
    return vectors, {
        "warmup_s": round(warm, 2), "seconds": round(seconds, 3),
        "texts_per_s": round(len(texts) / seconds, 1), "tokens_per_s": round(tokens / seconds, 1),
        "padded_share": padded_share(encoder, texts, batch),
    }  # fmt: skip


def peer(model_dir, texts: list[str], batch: int, tokens: int) -> tuple[np.ndarray, dict]:
    """sentence-transformers on the directory in bf16 (on the GPU when there is one)."""
    import torch
    from sentence_transformers import SentenceTransformer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = SentenceTransformer(str(model_dir), device=device).to(torch.bfloat16)
    encode = lambda: model.encode(texts, batch_size=batch, show_progress_bar=False)
    _, warm = _timed(encode)
    vectors, seconds = _timed(encode)
    attention = getattr(model[0].auto_model.config, "_attn_implementation", None)
    return np.asarray(vectors, np.float32), {
        "warmup_s": round(warm, 2), "seconds": round(seconds, 3),
        "texts_per_s": round(len(texts) / seconds, 1), "tokens_per_s": round(tokens / seconds, 1),
        "device": device, "attention": attention,
    }  # fmt: skip


def embed_phase(opts, clock, save, context: dict) -> dict[str, Any]:
    size = "smoke" if opts.smoke else "0.6b"
    cfg = qwen3(size).replace(pad_token_id=0)
    n, batch, lengths = (32, 8, (3, 12)) if opts.smoke else (4096, 64, (33, 128))
    words = min(cfg.vocab_size - len(gm.SPECIALS), 32768)
    report: dict[str, Any] = {
        "model": f"Qwen3-{size.upper()}-sized, random" if size != "smoke" else "tiny",
        "texts": n, "batch_size": batch, "words_per_text": list(lengths), "dtype": "bfloat16",
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        tokenizer = gm.write_tokenizer(root / "tokenizer", words, max_length=512)
        model_dir = gm.export(cfg, gm.random_params(cfg), root / "model", tokenizer)
        texts = gm.texts(n, words, lengths)
        tokens = sum(len(t.split()) for t in texts)
        mine, report["compass_jax"] = ours(model_dir, texts, batch, tokens)
        gc.collect()  # the encoder's device buffers, before PyTorch takes its share
        save(report)
        theirs, report["sentence_transformers"] = peer(model_dir, texts, batch, tokens)
    ratio = report["compass_jax"]["texts_per_s"] / report["sentence_transformers"]["texts_per_s"]
    report["ours_vs_peer"] = round(ratio, 3)
    report["cosine_ours_vs_peer"] = cosines(mine, theirs)
    return report

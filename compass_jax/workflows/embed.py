"""Embedding a file of texts (`compass-jax embed`): `.txt` or `.jsonl` in, an L2-normalised
float32 `.npy` out, one row per text in input order, written atomically."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from compass_jax.atomic import atomic_path
from compass_jax.encoder import Encoder
from compass_jax.textio import read_texts


def embed_file(
    model: str | os.PathLike | None,
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    prompt: str | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    dim: int | None = None,
    dtype: str = "float32",
    progress: bool = True,
) -> dict[str, Any]:
    """Embed every text of `input_path` with `model` (any argument `compass_jax.resolve`
    takes) into `output_path`; returns a summary (texts, dim, seconds, texts per second).

    Example:
        embed_file("multilingual-e5-small", "queries.txt", "queries.npy", prompt="query")
    """
    output_path = os.fspath(output_path)
    if not output_path.endswith(".npy"):
        raise ValueError(f"--output {output_path}: must end in .npy")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {batch_size}")
    texts = read_texts(input_path)
    encoder = Encoder.load(model, dtype=dtype)
    start = time.perf_counter()
    vectors = encoder.encode(
        texts, prompt=prompt, batch_size=batch_size, max_length=max_length, dim=dim,
        progress=progress,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    with atomic_path(output_path) as tmp, open(tmp, "wb") as f:
        np.save(f, vectors)
    return {
        "output": output_path,
        "model": encoder.path,
        "texts": len(texts),
        "dim": int(vectors.shape[1]),
        "seconds": round(seconds, 3),
        "texts_per_second": round(len(texts) / seconds, 1),
    }

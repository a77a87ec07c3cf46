"""Embedding a file of texts (`compass-jax embed`): `.txt` or `.jsonl` in, an L2-normalised
float32 `.npy` out, one row per text in input order, written atomically."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from compass_jax.atomic import atomic_open, check_writable
from compass_jax.encoder import Encoder
from compass_jax.resolve import resolve
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
    takes) into `output_path` (replaced if it exists); returns a summary: the model and what
    it was read from (`provenance`: a training run's workdir and step), texts, dim, seconds.

    Example:
        embed_file("multilingual-e5-small", "queries.txt", "queries.npy", prompt="query")
    """
    output_path = os.fspath(output_path)
    if not output_path.endswith(".npy"):
        raise ValueError(f"--out {output_path}: must end in .npy")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {batch_size}")
    check_writable(output_path)
    texts = read_texts(input_path)
    resolved = resolve(model)
    encoder = Encoder.load(resolved.path, dtype=dtype)
    encoder.cfg.check_dim(dim)
    start = time.perf_counter()
    vectors = encoder.encode(
        texts, prompt=prompt, batch_size=batch_size, max_length=max_length, dim=dim,
        progress=progress,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    with atomic_open(output_path, "wb") as f:
        np.save(f, vectors)
    return {
        "output": output_path,
        "model": resolved.label,
        "provenance": resolved.provenance(),
        "texts": len(texts),
        "dim": int(vectors.shape[1]),
        "seconds": round(seconds, 3),
        "texts_per_second": round(len(texts) / seconds, 1),
    }

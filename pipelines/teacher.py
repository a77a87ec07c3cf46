"""Teacher embedders for hard-negative mining and translation agreement.

`hashing`: character 3-5-gram feature hashing (signed, log term frequency, L2-normalised).
Deterministic, offline and thousands of texts per second on one core: the default run uses it,
since a transformer teacher embeds ~20-60 texts/s on a 2-core CPU. Any other name is a
compass-jax model (a bundled name such as `multilingual-e5-small`, a HF directory, a training
checkpoint) embedded through `compass_jax.encoder.Encoder`, with its own query/document
prompts: the right choice on an accelerator host.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

HASHING = "hashing"


class HashingTeacher:
    name = HASHING

    def __init__(self, dim: int = 512, ngrams: tuple[int, ...] = (3, 4, 5)):
        self.dim, self.ngrams = dim, ngrams

    def _vector(self, text: str) -> np.ndarray:
        text = f" {' '.join(text.casefold().split())} "
        grams = [text[i : i + n] for n in self.ngrams for i in range(max(1, len(text) - n + 1))]
        h = np.fromiter((zlib.crc32(g.encode("utf-8")) for g in grams), np.int64, len(grams))
        # Signed hashing: colliding n-grams cancel on average instead of piling up.
        v = np.bincount(h % self.dim, weights=((h >> 20) & 1) * 2.0 - 1.0, minlength=self.dim)
        v = np.sign(v) * np.log1p(np.abs(v))  # damp repeated n-grams (sublinear tf)
        norm = np.linalg.norm(v)
        return (v / norm if norm else v).astype(np.float32)

    def encode(self, texts: Sequence[str], prompt: str | None = None) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self._vector(t) for t in texts])


class EncoderTeacher:
    def __init__(
        self, model: str, *, batch_size: int = 64, max_length: int = 64, dtype: str = "float32"
    ):
        from compass_jax.encoder import Encoder

        self.name = model
        self.encoder = Encoder.load(model, dtype=dtype)
        self.batch_size, self.max_length = batch_size, max_length

    def encode(self, texts: Sequence[str], prompt: str | None = None) -> np.ndarray:
        vectors = self.encoder.encode(
            list(texts),
            prompt=prompt,  # "query" / "document": the model's own prefixes, or none
            batch_size=self.batch_size,
            max_length=self.max_length,
        )
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)


def make_teacher(name: str, **kwargs):
    if name == HASHING:
        return HashingTeacher()
    return EncoderTeacher(name, **kwargs)

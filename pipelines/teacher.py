"""Teacher embedders for hard-negative mining and translation agreement.

`hashing`: character 3-5-gram feature hashing (signed, log term frequency, L2-normalised).
Deterministic, offline and thousands of texts per second on one core, but blind across
scripts: a Thai query and its English positive share no n-grams. Any other name is a
compass-jax model (a bundled name such as `multilingual-e5-small`, a HF directory, a training
checkpoint) embedded through `compass_jax.encoder.Encoder` in batches (one jitted program per
length bucket), with the model's own query/document prompts.

`auto` (the default) takes the default model for builds of up to
`mining.auto_model_max_records` deduplicated records and hashing above: on a 2-core CPU the
model embeds about 100-150 texts/s, so 10,000 records (about 17,000 texts with their
documents) cost 2-3 minutes, while the bundled 20,000-group catalog (200,000 records) would
take hours. The rule depends on the data only, never on the machine, so one config gives one
output everywhere; on an accelerator host, name the model (`mining.teacher=...`) for any size.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Sequence

import numpy as np

HASHING = "hashing"
AUTO = "auto"
DEFAULT_MODEL = "multilingual-e5-small"


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


@functools.lru_cache(maxsize=2)  # one model load per process (per Beam worker)
def make_teacher(name: str, **kwargs):
    if name == HASHING:
        return HashingTeacher()
    return EncoderTeacher(name, **kwargs)


def teacher_name(cfg, records: int) -> str:
    """The teacher a build of `records` deduplicated records mines with (`cfg`: MiningConfig)."""
    if cfg.teacher != AUTO:
        return cfg.teacher
    return DEFAULT_MODEL if records <= cfg.auto_model_max_records else HASHING


def load_teacher(cfg, name: str):
    return make_teacher(name, batch_size=cfg.batch_size, max_length=cfg.max_length, dtype=cfg.dtype)


def translation_teacher(cfg):
    """translation.filter=embedding compares languages: `auto` means the model there."""
    return load_teacher(cfg, DEFAULT_MODEL if cfg.teacher == AUTO else cfg.teacher)

"""`Encoder`: texts in, normalised float32 embeddings out, for a model directory.

Batches are sorted by token length and padded to a small fixed set of shapes (`length_buckets`),
so XLA compiles a handful of programs instead of one per batch, and padding stays small.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from compass_jax.config import ModelConfig
from compass_jax.data.bucketing import length_buckets, pick_bucket
from compass_jax.embedding import embed
from compass_jax.interop import fp8 as fp8_format
from compass_jax.interop.fp8 import simulate_w8a8
from compass_jax.interop.st_package import EmbedderSettings, read_settings
from compass_jax.interop.tokenizer import load_tokenizer
from compass_jax.resolve import load_model


@dataclasses.dataclass(frozen=True)
class Batch:
    rows: np.ndarray  # indices into the input texts
    input_ids: np.ndarray  # [batch_size, bucket], padded rows beyond len(rows)
    attention_mask: np.ndarray


def make_batches(
    token_ids: Sequence[Sequence[int]],
    *,
    batch_size: int,
    buckets: Sequence[int],
    pad_id: int,
    padding_side: str = "right",
) -> Iterator[Batch]:
    """Length-sorted, bucket-padded batches of exactly `batch_size` rows (the last one is
    filled with empty rows, so every batch has one of `len(buckets)` shapes)."""
    order = np.argsort([-len(ids) for ids in token_ids], kind="stable")
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        longest = max(len(token_ids[r]) for r in rows)
        bucket = pick_bucket(longest, buckets)
        ids = np.full((batch_size, bucket), pad_id, np.int32)
        mask = np.zeros((batch_size, bucket), np.int32)
        for i, r in enumerate(rows):
            seq = token_ids[r]
            span = (
                slice(bucket - len(seq), bucket) if padding_side == "left" else slice(0, len(seq))
            )
            ids[i, span] = seq
            mask[i, span] = 1
        yield Batch(rows, ids, mask)


@functools.lru_cache(maxsize=32)
def embed_program(cfg: ModelConfig, pooling: str, normalize: bool, fp8: frozenset[str] | None):
    """`jit(params, ids, mask, dim) -> embeddings`, one per (config, pooling, FP8 simulation),
    shared by every encoder: the models of one architecture (a base, its fine-tunes, the merges
    of a sweep) compile once. With `fp8` (param paths), the input of each matmul with those
    weights is quantised per token to E4M3, as vLLM's FP8 kernels do (`simulate_w8a8`)."""

    def run(params, ids, mask, dim):
        fn = lambda p, i, m: embed(cfg, p, i, m, pooling=pooling, normalize=normalize, dim=dim)
        if fp8 is not None:
            fn = simulate_w8a8(fn, fp8.__contains__)
        return fn(params, ids, mask)

    return jax.jit(run, static_argnums=3)


@dataclasses.dataclass
class Encoder:
    cfg: ModelConfig
    params: Any
    tokenizer: Any
    settings: EmbedderSettings
    path: str = ""  # the directory with the tokenizer and sentence-transformers files
    source: str = ""  # what was loaded: that directory, a training workdir or a checkpoint
    fp8: frozenset[str] | None = None  # params served as FP8 (activations simulated)

    @classmethod
    def load(cls, model: str | os.PathLike | None = None, *, dtype: str = "float32") -> Encoder:
        """An encoder for a model directory or a known name (None: the default model)."""
        cfg, params, path = load_model(model, dtype=dtype)
        tokenizer = load_tokenizer(path)
        settings = read_settings(
            path, cfg.arch, default_max_length=min(tokenizer.model_max_length, 8192)
        )
        fp8 = fp8_format.served_fp8(path, cfg, params)
        # Inference keeps weights in the compute dtype: half the memory traffic in bf16.
        params = jax.device_put(jax.tree.map(lambda x: jnp.asarray(x, dtype), params))
        source = os.fspath(model) if model is not None else str(path)
        return cls(cfg, params, tokenizer, settings, str(path), source, fp8)

    @property
    def dim(self) -> int:
        return self.cfg.hidden_size

    def tokenize(self, texts: Sequence[str], prompt: str | None = None, max_length=None):
        prefix = self.settings.prompt_text(prompt)
        max_length = min(max_length or self.settings.max_length, self.settings.max_length)
        encoded = self.tokenizer(
            [prefix + t for t in texts], truncation=True, max_length=max_length
        )
        return encoded["input_ids"], max_length

    @property
    def _embed_fn(self):
        s = self.settings
        return embed_program(self.cfg, s.pooling, s.normalize, self.fp8)

    def encode(
        self,
        texts: Sequence[str],
        *,
        prompt: str | None = None,
        batch_size: int = 32,
        max_length: int | None = None,
        dim: int | None = None,
        progress: bool = False,
    ) -> np.ndarray:
        """`[len(texts), dim]` float32 embeddings in input order (L2-normalised when the model
        normalises)."""
        if dim is not None and not 0 < dim <= self.dim:
            raise ValueError(f"--dim must be in 1..{self.dim}, got {dim}")
        width = dim or self.dim
        out = np.zeros((len(texts), width), np.float32)
        if not texts:
            return out
        token_ids, max_length = self.tokenize(texts, prompt, max_length)
        pad_id = self.tokenizer.pad_token_id
        pad_id = pad_id if pad_id is not None else (self.cfg.pad_token_id or 0)
        batches = make_batches(
            token_ids,
            batch_size=batch_size,
            buckets=length_buckets(max_length),
            pad_id=pad_id,
            padding_side=self.tokenizer.padding_side,
        )
        bar = tqdm(total=len(texts), unit="text", disable=not progress, desc="embed")
        pending = None  # one batch in flight: the host pads the next while the device runs
        for batch in batches:
            result = self._embed_fn(self.params, batch.input_ids, batch.attention_mask, dim)
            if pending is not None:
                self._collect(out, *pending, bar)
            pending = (batch.rows, result)
        self._collect(out, *pending, bar)
        bar.close()
        if bad := np.flatnonzero(~np.isfinite(out).all(axis=1)).tolist():  # never passed on
            where = f"{self.source or self.path}: {len(bad)} of {len(texts)} embeddings"
            raise ValueError(f"{where} are not finite (first: text {bad[0] + 1})")
        return out

    @staticmethod
    def _collect(out, rows, result, bar):
        out[rows] = np.asarray(result)[: len(rows)]
        bar.update(len(rows))

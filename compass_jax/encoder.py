"""`Encoder`: texts in, normalised float32 embeddings out, for a model directory.

Texts are packed several to a row (`compass_jax.data.packing`): rows of a few fixed lengths,
a fixed token budget per batch, a block-diagonal attention mask and one pooled vector per text.
Almost every computed token is a real one, XLA compiles a handful of programs, and each text's
embedding equals what it gives alone in a padded batch.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from compass_jax.config import ModelConfig
from compass_jax.data.packing import Layout, pack
from compass_jax.embedding import embed_segments
from compass_jax.interop import fp8 as fp8_format
from compass_jax.interop.fp8 import simulate_w8a8
from compass_jax.interop.st_package import EmbedderSettings, read_settings
from compass_jax.interop.tokenizer import load_tokenizer
from compass_jax.machine import default_compute_dtype
from compass_jax.resolve import load_model

# `batch_size` counts rows of this many tokens: a batch holds `batch_size * ROW_TOKENS` tokens
# whatever the texts' lengths (rows are this long unless texts are longer). On a 2-core EPYC,
# rows of 64 and 2048-token batches ran 5-10% faster than rows of 128 or 4096-8192-token
# batches (less attention over other texts' keys; activations that stay in cache).
ROW_TOKENS = 64


@functools.lru_cache(maxsize=32)
def embed_program(cfg: ModelConfig, pooling: str, normalize: bool, fp8: frozenset[str] | None):
    """`jit(params, ids, segment_ids, dim, segments) -> [rows, segments, dim]` embeddings, one
    per (config, pooling, FP8 simulation), shared by every encoder: the models of one
    architecture (a base, its fine-tunes, the merges of a sweep) compile once per batch shape.
    With `fp8` (param paths), the input of each matmul with those weights is quantised per token
    to E4M3, as vLLM's FP8 kernels do (`simulate_w8a8`)."""

    def run(params, ids, segment_ids, dim, segments):
        def fn(p, i, s):
            return embed_segments(
                cfg, p, i, s, segments=segments, pooling=pooling, normalize=normalize, dim=dim
            )

        if fp8 is not None:
            fn = simulate_w8a8(fn, fp8.__contains__)
        return fn(params, ids, segment_ids)

    return jax.jit(run, static_argnums=(3, 4))


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
    def load(cls, model: str | os.PathLike | None = None, *, dtype: str | None = None) -> Encoder:
        """An encoder for a model directory or a known name (None: the default model), computing
        in `dtype` (None: what this machine runs fastest, `machine.default_compute_dtype`)."""
        dtype = dtype or default_compute_dtype()
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

    @property
    def dtype(self) -> str:
        """The compute dtype ("float32" | "bfloat16")."""
        return self.cfg.dtype

    def layout(self, max_length: int, batch_size: int = 32) -> Layout:
        """How `encode` batches texts of at most `max_length` tokens."""
        return Layout.for_max_length(
            max_length, smallest=ROW_TOKENS, tokens=batch_size * ROW_TOKENS
        )

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
        layout: Layout | None = None,
    ) -> np.ndarray:
        """`[len(texts), dim]` float32 embeddings in input order (L2-normalised when the model
        normalises). A batch holds `batch_size` rows of 64 tokens' worth of packed texts;
        `layout` overrides how texts are batched (`compass_jax.data.packing.Layout`)."""
        if dim is not None and not 0 < dim <= self.dim:
            raise ValueError(f"--dim must be in 1..{self.dim}, got {dim}")
        out = np.zeros((len(texts), dim or self.dim), np.float32)
        if not texts:
            return out
        token_ids, max_length = self.tokenize(texts, prompt, max_length)
        layout = layout or self.layout(max_length, batch_size)
        pad_id = self.tokenizer.pad_token_id
        pad_id = pad_id if pad_id is not None else (self.cfg.pad_token_id or 0)
        bar = tqdm(total=len(texts), unit="text", disable=not progress, desc="embed")
        pending = None  # one batch in flight: the host packs the next while the device runs
        for batch in pack(token_ids, layout, pad_id=pad_id):
            segments = batch.texts.shape[1]
            result = self._embed_fn(self.params, batch.token_ids, batch.segment_ids, dim, segments)
            if pending is not None:
                self._collect(out, *pending, bar)
            pending = (batch.texts, result)
        if pending is not None:
            self._collect(out, *pending, bar)
        bar.close()
        if bad := np.flatnonzero(~np.isfinite(out).all(axis=1)).tolist():  # never passed on
            where = f"{self.source or self.path}: {len(bad)} of {len(texts)} embeddings"
            raise ValueError(f"{where} are not finite (first: text {bad[0] + 1})")
        return out

    @staticmethod
    def _collect(out, texts, result, bar):
        held = texts >= 0
        out[texts[held]] = np.asarray(result)[held]
        bar.update(int(held.sum()))

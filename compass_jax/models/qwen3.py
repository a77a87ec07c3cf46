"""Qwen3 decoder backbone as an embedder (pre-RMSNorm, GQA, q/k norms, RoPE, SwiGLU)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from compass_jax.config import ModelConfig
from compass_jax.models.attention import SelfAttention
from compass_jax.models.layers import (
    Dense,
    Embed,
    RMSNorm,
    Stack,
    dropout,
    rope_tables,
    segment_positions,
)


class Embeddings(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.token = Embed(cfg.vocab_size, cfg.hidden_size, rngs=rngs)


class MLP(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d, f = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = Dense(d, f, use_bias=False, rngs=rngs)
        self.up_proj = Dense(d, f, use_bias=False, rngs=rngs)
        self.down_proj = Dense(f, d, use_bias=False, rngs=rngs)

    def __call__(self, x: Float[Array, "b l d"]) -> Float[Array, "b l d"]:
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.attn_norm = RMSNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.attn = SelfAttention(cfg, rngs=rngs)
        self.mlp_norm = RMSNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.mlp = MLP(cfg, rngs=rngs)
        self.rate = cfg.hidden_dropout

    def __call__(self, x, segment_ids, rope, key):
        k1, k2 = jax.random.split(key) if key is not None else (None, None)
        x = x + dropout(self.attn(self.attn_norm(x), segment_ids, rope), self.rate, k1)
        return x + dropout(self.mlp(self.mlp_norm(x)), self.rate, k2)


class Qwen3(Stack):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.embeddings = Embeddings(cfg, rngs=rngs)
        self.layers = nnx.List([Layer(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
        self.final_norm = RMSNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.cfg = cfg

    def embed(self, input_ids, segment_ids, key) -> Float[Array, "b l d"]:
        return self.embeddings.token(input_ids, jnp.dtype(self.cfg.dtype))

    def layer_context(self, segment_ids) -> tuple:
        # Positions restart at each text. HF counts from the row's first token even under left
        # padding; RoPE scores depend only on offsets, so real tokens see the same scores.
        positions = segment_positions(segment_ids)
        return (rope_tables(positions, self.cfg.head_dim, self.cfg.rope_theta),)

    def finish(self, x):
        return self.final_norm(x)

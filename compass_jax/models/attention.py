"""Multi-head self-attention shared by the encoder and decoder families."""

from __future__ import annotations

from flax import nnx
from jaxtyping import Array, Float, Int

from compass_jax.config import ModelConfig
from compass_jax.models.layers import Dense, RMSNorm, apply_rope, attention


class SelfAttention(nnx.Module):
    """q/k/v/o projections; Qwen3 adds a per-head RMSNorm on q and k before RoPE."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d, n, k, h = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        bias = cfg.attention_bias
        self.q_proj = Dense(d, n * h, use_bias=bias, rngs=rngs)
        self.k_proj = Dense(d, k * h, use_bias=bias, rngs=rngs)
        self.v_proj = Dense(d, k * h, use_bias=bias, rngs=rngs)
        self.o_proj = Dense(n * h, d, use_bias=bias, rngs=rngs)
        if cfg.is_decoder:
            self.q_norm = RMSNorm(h, eps=cfg.norm_eps)
            self.k_norm = RMSNorm(h, eps=cfg.norm_eps)
        self.shape = (n, k, h)
        self.causal = cfg.causal
        self.implementation = cfg.attention_impl

    def __call__(
        self,
        x: Float[Array, "b l d"],
        segment_ids: Int[Array, "b l"],
        rope: tuple[Array, Array] | None = None,
    ) -> Float[Array, "b l d"]:
        n, k, h = self.shape
        b, length, _ = x.shape
        q = self.q_proj(x).reshape(b, length, n, h)
        key = self.k_proj(x).reshape(b, length, k, h)
        value = self.v_proj(x).reshape(b, length, k, h)
        if hasattr(self, "q_norm"):
            q, key = self.q_norm(q), self.k_norm(key)
        if rope is not None:
            q, key = apply_rope(q, *rope), apply_rope(key, *rope)
        out = attention(
            q, key, value, segment_ids, causal=self.causal, implementation=self.implementation
        )
        return self.o_proj(out.reshape(b, length, n * h))

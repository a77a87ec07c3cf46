"""BERT and XLM-RoBERTa encoders (post-LayerNorm, learned absolute positions).

XLM-R differs only in its position ids: they start after `padding_idx`, so position
`pad_token_id + 1` is the first real token of each text (HF counts non-padding ids, which is the
same thing for one right- or left-padded text per row).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float, Int

from compass_jax.config import ModelConfig
from compass_jax.models.attention import SelfAttention
from compass_jax.models.layers import (
    Dense,
    Embed,
    LayerNorm,
    Stack,
    activation,
    dropout,
    segment_positions,
)


class Embeddings(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d = cfg.hidden_size
        self.token = Embed(cfg.vocab_size, d, rngs=rngs)
        self.position = Embed(cfg.max_position_embeddings, d, rngs=rngs)
        self.token_type = Embed(max(cfg.type_vocab_size, 1), d, rngs=rngs)
        self.norm = LayerNorm(d, eps=cfg.norm_eps)


class MLP(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.up_proj = Dense(cfg.hidden_size, cfg.intermediate_size, use_bias=True, rngs=rngs)
        self.down_proj = Dense(cfg.intermediate_size, cfg.hidden_size, use_bias=True, rngs=rngs)
        self.act = cfg.hidden_act

    def __call__(self, x: Float[Array, "b l d"]) -> Float[Array, "b l d"]:
        return self.down_proj(activation(self.act, self.up_proj(x)))


class Layer(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.attn = SelfAttention(cfg, rngs=rngs)
        self.attn_norm = LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.mlp = MLP(cfg, rngs=rngs)
        self.mlp_norm = LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.rate = cfg.hidden_dropout

    def __call__(self, x, segment_ids, key):
        k1, k2 = jax.random.split(key) if key is not None else (None, None)
        x = self.attn_norm(x + dropout(self.attn(x, segment_ids), self.rate, k1))
        return self.mlp_norm(x + dropout(self.mlp(x), self.rate, k2))


class Bert(Stack):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.embeddings = Embeddings(cfg, rngs=rngs)
        self.layers = nnx.List([Layer(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
        self.cfg = cfg

    EMBEDDING_DROPOUT = True

    def embed(self, input_ids, segment_ids, key) -> Float[Array, "b l d"]:
        emb, dtype = self.embeddings, jnp.dtype(self.cfg.dtype)
        x = emb.token(input_ids, dtype) + emb.position(self.position_ids(segment_ids), dtype)
        x = emb.norm(x + emb.token_type(jnp.zeros_like(input_ids), dtype))
        return dropout(x, self.cfg.hidden_dropout, key)

    def layer_context(self, segment_ids) -> tuple:
        return ()

    def finish(self, x):
        return x

    def position_ids(self, segment_ids: Int[Array, "b l"]) -> Int[Array, "b l"]:
        """From 0 at each text's first token (HF counts from the row's first token, the same
        for right-padded BERT rows); XLM-R from `padding_idx + 1`, padding at `padding_idx`."""
        positions = segment_positions(segment_ids)
        if self.cfg.arch != "xlm-roberta":
            return positions
        pad = self.cfg.pad_token_id
        return jnp.where(segment_ids > 0, positions + pad + 1, pad)

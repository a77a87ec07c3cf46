"""Building blocks shared by the encoders. Modules hold float32 parameters only; the compute
dtype comes from the input, and every matmul accumulates in float32 (on CPUs with AMX a bf16
matmul with float32 accumulation runs ~4x faster than a plain bf16 one, and on GPU/TPU it is
what the MXU/tensor cores do anyway)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Bool, Float

_init = nnx.initializers.normal(stddev=0.02)


class Dense(nnx.Module):
    """`y = x @ kernel + bias` with kernel `[in, out]` (HF stores `[out, in]`)."""

    def __init__(self, din: int, dout: int, *, use_bias: bool, rngs: nnx.Rngs):
        self.kernel = nnx.Param(_init(rngs.params(), (din, dout), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((dout,), jnp.float32)) if use_bias else None

    def __call__(self, x: Float[Array, "... i"]) -> Float[Array, "... o"]:
        y = jnp.einsum(
            "...i,io->...o",
            x,
            self.kernel[...].astype(x.dtype),
            preferred_element_type=jnp.float32,
        )
        if self.bias is not None:
            y = y + self.bias[...]
        return y.astype(x.dtype)


class Embed(nnx.Module):
    def __init__(self, num: int, dim: int, *, rngs: nnx.Rngs):
        self.embedding = nnx.Param(_init(rngs.params(), (num, dim), jnp.float32))

    def __call__(self, ids: jax.Array, dtype) -> Float[Array, "... d"]:
        return jnp.take(self.embedding[...], ids, axis=0).astype(dtype)


class LayerNorm(nnx.Module):
    def __init__(self, dim: int, *, eps: float):
        self.scale = nnx.Param(jnp.ones((dim,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((dim,), jnp.float32))
        self.eps = eps

    def __call__(self, x: Float[Array, "... d"]) -> Float[Array, "... d"]:
        # Statistics in float32: bf16 variance over hundreds of channels loses digits.
        x32 = x.astype(jnp.float32)
        mean = x32.mean(-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        return (y * self.scale[...] + self.bias[...]).astype(x.dtype)


class RMSNorm(nnx.Module):
    def __init__(self, dim: int, *, eps: float):
        self.scale = nnx.Param(jnp.ones((dim,), jnp.float32))
        self.eps = eps

    def __call__(self, x: Float[Array, "... d"]) -> Float[Array, "... d"]:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.square(x32).mean(-1, keepdims=True) + self.eps)
        # Qwen3 rounds to the input dtype before scaling; keep that order for bf16 parity.
        return self.scale[...].astype(x.dtype) * y.astype(x.dtype)


def activation(name: str, x: jax.Array) -> jax.Array:
    if name == "gelu":
        return jax.nn.gelu(x, approximate=False)
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return jax.nn.gelu(x, approximate=True)
    if name == "silu":
        return jax.nn.silu(x)
    raise ValueError(f"unsupported activation {name!r}")


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Inverted dropout; identity when `key` is None or `rate` is 0 (evaluation)."""
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def rope_tables(
    length: int, head_dim: int, theta: float
) -> tuple[Float[Array, "l h"], Float[Array, "l h"]]:
    """cos/sin tables of the half-split ("rotate_half") RoPE that HF Qwen models use."""
    inv_freq = 1.0 / theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
    freqs = jnp.arange(length, dtype=jnp.float32)[:, None] * inv_freq[None, :]
    angles = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(
    x: Float[Array, "b l n h"], cos: Float[Array, "l h"], sin: Float[Array, "l h"]
) -> Float[Array, "b l n h"]:
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    return (x.astype(jnp.float32) * cos + rotated.astype(jnp.float32) * sin).astype(x.dtype)


def attention(
    q: Float[Array, "b l n h"],
    k: Float[Array, "b l k h"],
    v: Float[Array, "b l k h"],
    mask: Bool[Array, "b l"],
    *,
    causal: bool,
    implementation: str | None = None,
) -> Float[Array, "b l n h"]:
    """Scaled dot-product attention over non-padding keys (grouped-query when k < n).

    `implementation` is `jax.nn.dot_product_attention`'s: None (XLA today, on every backend) or
    "cudnn" (the fused flash kernel). cuDNN takes a boolean mask only at full `[b, 1, l, l]`
    shape (it becomes an additive bias), so that path broadcasts the key mask; any padding side
    works. Query rows at padding positions attend like any other row; poolers ignore them.
    """
    mask = mask[:, None, None, :]
    if implementation == "cudnn":
        b, length = q.shape[:2]
        mask = jnp.broadcast_to(mask, (b, 1, length, length))
    return jax.nn.dot_product_attention(
        q, k, v, mask=mask, is_causal=causal, implementation=implementation
    )

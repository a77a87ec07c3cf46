"""Building blocks shared by the encoders. Modules hold float32 parameters only; the compute
dtype comes from the input, and every matmul accumulates in float32 (on CPUs with AMX a bf16
matmul with float32 accumulation runs ~4x faster than a plain bf16 one, and on GPU/TPU it is
what the MXU/tensor cores do anyway)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float, Int

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


class Stack(nnx.Module):
    """An encoder as embeddings, `self.layers` and a final step, split in two at any depth k:
    `trunk` (embeddings, layers `0..k-1`) and `top` (layers `k..`, the final step). Dropout keys
    are those the layers get in the whole stack, which is `top(trunk(ids, 0), 0)`.

    Subclasses give `embed(ids, segment_ids, key)`, `layer_context(segment_ids)` (extra layer
    inputs, e.g. RoPE tables), `finish(x)`, and `EMBEDDING_DROPOUT` (whether `embed` takes a key).
    """

    EMBEDDING_DROPOUT = False

    def __call__(
        self,
        input_ids: Int[Array, "b l"],
        segment_ids: Int[Array, "b l"],
        dropout_key: jax.Array | None = None,
    ) -> Float[Array, "b l d"]:
        hidden = self.trunk(input_ids, segment_ids, 0, dropout_key)
        return self.top(hidden, segment_ids, 0, dropout_key)

    def _keys(self, dropout_key: jax.Array | None) -> list:
        """Key 0 for the embeddings, key i + 1 for layer i, whichever half runs them."""
        n = len(self.layers)
        if dropout_key is None:
            return [None] * (n + 1)
        if self.EMBEDDING_DROPOUT:
            return list(jax.random.split(dropout_key, n + 1))
        return [None, *jax.random.split(dropout_key, n)]

    def _layers(self, x, segment_ids, layers: range, keys: list):
        context = self.layer_context(segment_ids)
        for i in layers:
            x = self.layers[i](x, segment_ids, *context, keys[i + 1])
        return x

    def trunk(
        self,
        input_ids: Int[Array, "b l"],
        segment_ids: Int[Array, "b l"],
        depth: int,
        dropout_key: jax.Array | None = None,
    ) -> Float[Array, "b l d"]:
        """The embeddings and layers `0..depth-1`."""
        keys = self._keys(dropout_key)
        x = self.embed(input_ids, segment_ids, keys[0])
        return self._layers(x, segment_ids, range(depth), keys)

    def top(
        self,
        hidden: Float[Array, "b l d"],
        segment_ids: Int[Array, "b l"],
        depth: int,
        dropout_key: jax.Array | None = None,
    ) -> Float[Array, "b l d"]:
        """Layers `depth..` and the final step, from the trunk's states."""
        keys = self._keys(dropout_key)
        return self.finish(self._layers(hidden, segment_ids, range(depth, len(self.layers)), keys))


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


def segment_positions(segment_ids: Int[Array, "b l"]) -> Int[Array, "b l"]:
    """Each token's index within its run of equal segment ids: 0 at the first token of every
    text packed into a row (and of every padding run)."""
    index = jnp.arange(segment_ids.shape[1], dtype=jnp.int32)
    starts = jnp.concatenate(
        [jnp.ones_like(segment_ids[:, :1], bool), segment_ids[:, 1:] != segment_ids[:, :-1]], 1
    )
    return index - jax.lax.cummax(jnp.where(starts, index, 0), axis=1)


def rope_tables(
    positions: Int[Array, "b l"], head_dim: int, theta: float
) -> tuple[Float[Array, "b l h"], Float[Array, "b l h"]]:
    """cos/sin tables of the half-split ("rotate_half") RoPE that HF Qwen models use."""
    inv_freq = 1.0 / theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq
    angles = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(
    x: Float[Array, "b l n h"], cos: Float[Array, "b l h"], sin: Float[Array, "b l h"]
) -> Float[Array, "b l n h"]:
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    return (x.astype(jnp.float32) * cos + rotated.astype(jnp.float32) * sin).astype(x.dtype)


def attention(
    q: Float[Array, "b l n h"],
    k: Float[Array, "b l k h"],
    v: Float[Array, "b l k h"],
    segment_ids: Int[Array, "b l"],
    *,
    causal: bool,
    implementation: str | None = None,
) -> Float[Array, "b l n h"]:
    """Scaled dot-product attention within segments (grouped-query when k < n).

    A token attends only to tokens of its own segment: the mask is block-diagonal, so texts
    packed into one row never see each other, and padding (segment 0) only sees padding, which
    poolers ignore. Both matmuls take the compute dtype and accumulate in float32, and the
    softmax runs in float32. (`jax.nn.dot_product_attention`'s XLA path multiplies the
    probabilities by the values with a bf16 result, which XLA:CPU runs as a float32 matmul on
    upcast copies: 15% slower end to end in bf16 on an AVX512-BF16 EPYC.)

    `implementation="cudnn"` runs `jax.nn.dot_product_attention`'s fused flash kernel (GPU,
    bf16) instead; it takes a boolean mask only at full `[b, 1, l, l]` shape (it becomes an
    additive bias), so that path builds the same block-diagonal mask at that shape. None and
    "xla" are the core above.
    """
    allowed = segment_ids[:, :, None] == segment_ids[:, None, :]  # [b, l, l]: query, key
    if implementation == "cudnn":
        return jax.nn.dot_product_attention(
            q, k, v, mask=allowed[:, None], is_causal=causal, implementation="cudnn"
        )
    b, length, n, h = q.shape
    groups = n // k.shape[2]
    q = q.reshape(b, length, k.shape[2], groups, h)
    logits = jnp.einsum("blkgh,bmkh->bkglm", q, k, preferred_element_type=jnp.float32)
    if causal:
        allowed &= jnp.tril(jnp.ones((length, length), bool))
    logits = jnp.where(allowed[:, None, None], logits * h**-0.5, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkglm,bmkh->blkgh", probs, v, preferred_element_type=jnp.float32)
    return out.reshape(b, length, n, h).astype(v.dtype)

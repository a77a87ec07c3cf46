"""Geodesic merging as scalar algebra: the coefficients that express SLERP and the Karcher mean
as linear combinations of the inputs, computed from inner products alone.

The result of every spherical merge lies in the span of its inputs, so it is `sum_i c_i x_i` for
some small vector `c`, and `c` depends on the inputs only through their Gram matrix. That is what
makes these merges cheap on sharded or streamed tensors: one pass of inner products, scalar work
here, one pass to form the result.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

Mode = Literal["mergekit", "geodesic"]

DOT_THRESHOLD = 0.9995  # mergekit's: above this |cos| the two vectors count as colinear
EPS = 1e-8  # mergekit's normalisation guard


def slerp_coefficients(
    aa: jax.Array, bb: jax.Array, ab: jax.Array, t: Any, mode: Mode
) -> tuple[jax.Array, jax.Array]:
    """`(s0, s1)` with `slerp(a, b, t) = s0 a + s1 b`, from `|a|^2`, `|b|^2` and `a.b` alone.

    mode="mergekit" is mergekit's `slerp` exactly: the angle between the normalised copies, the
    unnormalised tensors interpolated, linear interpolation when `|cos| > DOT_THRESHOLD`.
    mode="geodesic" moves the direction along the great circle and the norm linearly.
    """
    t = jnp.asarray(t, jnp.float32)
    na, nb = jnp.sqrt(aa), jnp.sqrt(bb)
    # mergekit's normalize(): a vector at or below eps is left as it is.
    da, db = jnp.where(na > EPS, na, 1.0), jnp.where(nb > EPS, nb, 1.0)
    dot = ab / (da * db)
    theta = jnp.arccos(jnp.clip(dot, -1.0, 1.0))
    theta_t = theta * t
    sin_theta = jnp.sin(theta)
    colinear = jnp.abs(dot) > DOT_THRESHOLD
    safe_sin = jnp.where(colinear, 1.0, sin_theta)
    sphere0 = jnp.sin(theta - theta_t) / safe_sin
    sphere1 = jnp.sin(theta_t) / safe_sin
    if mode == "mergekit":
        return jnp.where(colinear, 1 - t, sphere0), jnp.where(colinear, t, sphere1)
    if mode != "geodesic":
        raise ValueError(f"mode: expected 'mergekit' or 'geodesic', got {mode!r}")
    # Nearly parallel: normalised lerp of the unit vectors, whose norm follows from `dot`.
    chord = jnp.sqrt(jnp.maximum((1 - t) ** 2 + t**2 + 2 * t * (1 - t) * dot, EPS))
    near = dot > DOT_THRESHOLD
    u0 = jnp.where(near, (1 - t) / chord, sphere0)
    u1 = jnp.where(near, t / chord, sphere1)
    norm_t = (1 - t) * na + t * nb
    # A zero vector has no direction and antipodal ones no unique geodesic: lerp, as mergekit.
    degenerate = (na <= EPS) | (nb <= EPS) | (dot < -DOT_THRESHOLD)
    return (
        jnp.where(degenerate, 1 - t, norm_t * u0 / da),
        jnp.where(degenerate, t, norm_t * u1 / db),
    )


@functools.partial(jax.jit, static_argnames=("max_iter",))
def karcher_coefficients(
    gram: Float[Array, "m m"], weights: Float[Array, " m"], tol: float, max_iter: int
) -> Float[Array, " m"]:
    """`c` with `Karcher mean = sum_j c_j x_j`, from the Gram matrix `x_i . x_j` and the weights.

    The mean always stays in the span of the inputs, so mergekit's iteration (log map, weighted
    tangent average, exp map, renormalise) runs on m coefficients instead of whole tensors: one
    pass over the data for the Gram matrix, one to form the result, whatever the iteration count.
    The norm of the result is the weighted mean of the input norms.
    """
    norms = jnp.sqrt(jnp.maximum(jnp.diag(gram), 0.0))
    valid = norms > tol  # mergekit leaves near-zero tensors out of the direction
    inv = jnp.where(valid, 1.0 / jnp.where(valid, norms, 1.0), 0.0)
    unit_gram = gram * inv[:, None] * inv[None, :]  # Gram matrix of the unit vectors
    w = jnp.where(valid, weights, 0.0)
    w = w / jnp.where(w.sum() > 0, w.sum(), 1.0)
    length = lambda c: jnp.sqrt(jnp.maximum(c @ unit_gram @ c, 0.0))

    first = jax.nn.one_hot(jnp.argmax(valid), len(weights), dtype=jnp.float32)
    start_norm = length(w)
    c = jnp.where(start_norm < tol, first, w / jnp.where(start_norm < tol, 1.0, start_norm))

    def step(state):
        i, c, _ = state
        dot = jnp.clip(unit_gram @ c, -1.0, 1.0)  # cos of each input to the current mean
        theta = jnp.arccos(dot)
        scale = jnp.where(theta < tol, 0.0, theta / jnp.where(theta < tol, 1.0, jnp.sin(theta)))
        tangent = w * scale - jnp.sum(w * scale * dot) * c  # sum_i w_i log_mean(u_i)
        size = length(tangent)
        done = size < tol
        moved = jnp.cos(size) * c + jnp.sin(size) * tangent / jnp.where(done, 1.0, size)
        size_after = length(moved)
        moved = moved / jnp.where(size_after > tol, size_after, 1.0)
        return i + 1, jnp.where(done, c, moved), done

    _, c, _ = jax.lax.while_loop(
        lambda s: (s[0] < max_iter) & ~s[2], step, (jnp.int32(0), c, jnp.bool_(False))
    )
    c = jnp.where(jnp.any(valid), c, 0.0)
    return c * jnp.sum(weights * norms) / jnp.sum(weights) * inv

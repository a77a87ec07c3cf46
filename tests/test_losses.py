"""CAM-InfoNCE: the tiled and sharded forms against the reference, and the reference against an
independent numpy computation from hand-listed masks."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from compass_jax import sharding
from compass_jax.losses import (
    ContrastiveBatch,
    LossSettings,
    cam_infonce,
    cam_infonce_sharded,
    cam_infonce_tiled,
)


def random_batch(b=16, g=2, d=8, seed=0, n_labels=3):
    rng = np.random.default_rng(seed)
    unit = lambda *s: (x := rng.normal(size=(*s, d))) / np.linalg.norm(x, axis=-1, keepdims=True)
    label = rng.integers(-1, n_labels, b)
    positive_hash = rng.integers(0, 2**31, b)
    positive_hash[3] = positive_hash[5]  # a duplicate positive text
    negative_hash = rng.integers(0, 2**31, (b, g))
    negative_hash[1, 0] = positive_hash[2]  # a hard negative equal to another's positive
    negative_valid = rng.random((b, g)) > 0.3  # any number of negatives, including none
    negative_valid[0] = False
    return ContrastiveBatch(
        query=jnp.asarray(unit(b), jnp.float32),
        positive=jnp.asarray(unit(b), jnp.float32),
        negatives=jnp.asarray(unit(b, g), jnp.float32),
        negative_valid=jnp.asarray(negative_valid),
        label=jnp.asarray(label, jnp.int32),
        negative_label=jnp.asarray(rng.integers(-1, n_labels, (b, g)), jnp.int32),
        query_hash=jnp.asarray(rng.integers(0, 2**31, b), jnp.int32),
        positive_hash=jnp.asarray(positive_hash, jnp.int32),
        negative_hash=jnp.asarray(negative_hash, jnp.int32),
    )


SETTINGS = {
    "plain": LossSettings(class_mask=False, duplicate_mask=False),
    "cam": LossSettings(),
    "cam-margin": LossSettings(margin=0.05, temperature=0.05),
    "cam-qq-symmetric": LossSettings(query_query=True, symmetric=True),
}
EMB_FIELDS = ("query", "positive", "negatives")


def _loss_and_grads(fn, batch):
    def loss(embs):
        return fn(dataclasses.replace(batch, **dict(zip(EMB_FIELDS, embs, strict=True))))

    embs = tuple(getattr(batch, f) for f in EMB_FIELDS)
    (value, metrics), grads = jax.value_and_grad(loss, has_aux=True)(embs)
    return value, metrics, grads


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_tiled_equals_reference_in_value_and_gradient(name):
    settings, batch = SETTINGS[name], random_batch()
    ref = _loss_and_grads(lambda b: cam_infonce(b, settings), batch)
    tiled = _loss_and_grads(lambda b: cam_infonce_tiled(b, settings, block=(4, 8)), batch)
    np.testing.assert_allclose(tiled[0], ref[0], atol=1e-5, rtol=0)
    for g_tiled, g_ref in zip(tiled[2], ref[2], strict=True):
        np.testing.assert_allclose(g_tiled, g_ref, atol=1e-5, rtol=0)
    for key in ref[1]:
        np.testing.assert_allclose(tiled[1][key], ref[1][key], atol=1e-5, rtol=1e-6, err_msg=key)
    assert float(jnp.abs(jnp.concatenate([g.ravel() for g in ref[2]])).max()) > 1e-3


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_sharded_on_8_devices_equals_reference(name):
    settings, batch = SETTINGS[name], random_batch()
    mesh = sharding.make_mesh(2, 4)
    placed = jax.device_put(batch, sharding.batch_sharding(mesh))
    fn = jax.jit(lambda b: cam_infonce_sharded(b, settings, mesh, block=(2, 8)))
    ref = _loss_and_grads(lambda b: cam_infonce(b, settings), batch)
    out = _loss_and_grads(fn, placed)
    np.testing.assert_allclose(out[0], ref[0], atol=1e-5, rtol=0)
    for g_out, g_ref in zip(out[2], ref[2], strict=True):
        np.testing.assert_allclose(g_out, g_ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(out[1]["masked_class"], ref[1]["masked_class"], atol=1e-7)


def _hand_example():
    """4 examples, 1 hard negative slot each; candidates are [d0..d3, n0..n3].

    labels: 0, 0, -1, 1 -> query 0 and 1 share a class: d1 is masked for q0, d0 for q1. Hard
    negatives carry their own labels: n0 (example 0's, label 1) is masked for q3 (label 1); n3
    (label 1) is q3's own hard negative and stays; n1 (label 0) sits in an empty slot.
    Duplicate: n2 has the text of d3 -> masked for q3.
    """
    rng = np.random.default_rng(1)
    e = rng.normal(size=(12, 6))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    batch = ContrastiveBatch(
        query=jnp.asarray(e[:4], jnp.float32),
        positive=jnp.asarray(e[4:8], jnp.float32),
        negatives=jnp.asarray(e[8:12, None], jnp.float32),
        negative_valid=jnp.asarray([[True], [False], [True], [True]]),
        label=jnp.asarray([0, 0, -1, 1], jnp.int32),
        negative_label=jnp.asarray([[1], [0], [-1], [1]], jnp.int32),
        query_hash=jnp.asarray([100, 101, 102, 103], jnp.int32),
        positive_hash=jnp.asarray([200, 201, 202, 203], jnp.int32),
        negative_hash=jnp.asarray([[300], [301], [203], [303]], jnp.int32),
    )
    # (query, candidate) pairs removed, candidates numbered d0..d3 = 0..3, n0..n3 = 4..7.
    class_masked = {(0, 1), (1, 0), (3, 4)}
    dup_masked = {(3, 6)}
    absent = {(i, 5) for i in range(4)}
    return batch, e, class_masked, dup_masked, absent


def test_cam_removes_exactly_the_hand_computed_entries():
    batch, e, class_masked, dup_masked, absent = _hand_example()
    tau = 0.05
    q, cands = e[:4], np.concatenate([e[4:8], e[8:12]])
    losses = []
    for i in range(4):
        keep = [c for c in range(8) if (i, c) not in class_masked | dup_masked | absent]
        logits = q[i] @ cands[keep].T / tau
        losses.append(np.log(np.exp(logits).sum()) - q[i] @ cands[i] / tau)
    loss, metrics = cam_infonce(batch, LossSettings(temperature=tau))
    np.testing.assert_allclose(loss, np.mean(losses), rtol=1e-5)
    considered = 4 * 8 - len(absent) - 4  # minus padded and the positives
    np.testing.assert_allclose(metrics["masked_class"], len(class_masked) / considered, rtol=1e-6)
    np.testing.assert_allclose(metrics["masked_duplicate"], len(dup_masked) / considered, rtol=1e-6)
    assert float(metrics["masked_total"]) == len(class_masked | dup_masked)
    plain, _ = cam_infonce(
        batch, LossSettings(temperature=tau, class_mask=False, duplicate_mask=False)
    )
    assert abs(float(plain) - float(loss)) > 1e-3  # the masks change the loss


def test_same_class_pair_on_different_devices_is_masked():
    """Examples 0 and 7 share a label and sit on devices 0 and 7 of an 8-device mesh."""
    b = 8
    batch = random_batch(b=b, g=1, seed=3)
    batch = dataclasses.replace(
        batch,
        label=jnp.asarray([5, -1, -1, -1, -1, -1, -1, 5], jnp.int32),
        negative_label=jnp.full((b, 1), -1, jnp.int32),
        positive_hash=jnp.arange(b, dtype=jnp.int32),
        negative_hash=jnp.arange(b, 2 * b, dtype=jnp.int32)[:, None],
        negative_valid=jnp.ones((b, 1), bool),
    )
    mesh = sharding.make_mesh(8, 1)
    placed = jax.device_put(batch, sharding.batch_sharding(mesh))
    assert {s.device for s in placed.label.addressable_shards if s.index[0].start == 0} != {
        s.device for s in placed.label.addressable_shards if s.index[0].start == 7
    }
    settings = LossSettings(temperature=0.5)  # warm enough that one entry visibly matters
    loss, metrics = jax.jit(lambda x: cam_infonce_sharded(x, settings, mesh))(placed)
    ref_loss, _ = cam_infonce(batch, settings)
    assert float(metrics["masked_total"]) == 2.0  # d7 for q0 and d0 for q7, nothing else
    np.testing.assert_allclose(loss, ref_loss, atol=1e-6)
    unmasked, _ = cam_infonce(batch, dataclasses.replace(settings, class_mask=False))
    assert abs(float(loss) - float(unmasked)) > 1e-4


def test_masked_shares_by_kind_match_a_hand_count():
    """3 examples, 1 hard negative each, 2-d unit vectors with scores read off by hand
    (e1 = (1, 0), e2 = (0, 1), u = (.6, .8), w = (.8, .6)): q = e1, e2, w; d = u, w, e2; n = e2,
    e1, u. Labels 0, 0, 1; hard-negative labels 1, -1, 0; n0 has d2's text. Margin 0.1.

    q0 (s+ = .6): class d1, n2 (label 0, other examples'); margin d1 (.8), n1 (1.0).
    q1 (s+ = .6): class d0, n2; margin d0 (.8), d2 (1.0), n0 (1.0), n2 (.8).
    q2 (s+ = .6): class n0 (label 1, example 0's); duplicate n0 (d2's text); margin d0 (.96),
    d1 (1.0), n1 (.8), n2 (.96: its own hard negative, which the class mask keeps).
    Considered: 5 candidates per anchor, 15 pairs; class 5, duplicate 1, margin 10, any 12
    (q0: 3, q1: 4, q2: 5); kept besides the positive: q0 {d2, n0}, q1 {n1}, q2 none."""
    e1, e2, u, w = [1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6]
    f = lambda *v: jnp.asarray(v, jnp.float32)
    batch = ContrastiveBatch(
        query=f(e1, e2, w), positive=f(u, w, e2), negatives=f([e2], [e1], [u]),
        negative_valid=jnp.ones((3, 1), bool), label=jnp.asarray([0, 0, 1], jnp.int32),
        negative_label=jnp.asarray([[1], [-1], [0]], jnp.int32),
        query_hash=jnp.asarray([10, 11, 12], jnp.int32),
        positive_hash=jnp.asarray([20, 21, 22], jnp.int32),
        negative_hash=jnp.asarray([[22], [31], [32]], jnp.int32),
    )  # fmt: skip
    tau = 0.5
    settings = LossSettings(temperature=tau, margin=0.1)
    expected = {"masked_class": 5 / 15, "masked_duplicate": 1 / 15, "masked_margin": 10 / 15,
                "masked_any": 12 / 15, "masked_total": 12.0}  # fmt: skip
    # log(e^{s+/tau} + sum of kept e^{s/tau}) - s+/tau, by hand: q0 keeps d2, n0 (scores 0).
    lse = lambda *scores: np.log(np.sum(np.exp(np.array(scores) / tau)))
    loss = np.mean([lse(0.6, 0.0, 0.0), lse(0.6, 0.0), lse(0.6)]) - 0.6 / tau
    for fn in (cam_infonce, lambda b, s: cam_infonce_tiled(b, s, block=(1, 3))):
        value, metrics = fn(batch, settings)
        np.testing.assert_allclose(float(value), loss, rtol=1e-6)
        for name, share in expected.items():
            np.testing.assert_allclose(float(metrics[name]), share, rtol=1e-6, err_msg=name)

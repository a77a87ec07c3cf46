"""Flax encoders vs the PyTorch models in `transformers`, on random tiny models built from
configs (odd, distinct sizes so a swapped axis fails loudly) and saved as HF directories."""

import jax
import numpy as np
import pytest
import torch
from sentence_transformers.models import Pooling
from tiny import CASES, batch, bert, qwen3, randomize, save, torch_hidden, xlmr

from compass_jax import embedding, models
from compass_jax.interop import load_hf


@pytest.mark.parametrize("case", sorted(CASES))
def test_hidden_states_and_pooling_match_transformers(case, tmp_path):
    build, pad_id, side, pooling = CASES[case]
    torch_model = randomize(build(), seed=len(case))
    cfg, params = load_hf(save(torch_model, tmp_path))
    ids, mask = batch(torch_model.config.vocab_size, pad_id, side)

    expected = torch_hidden(torch_model, ids, mask)
    ours = np.asarray(jax.jit(models.apply, static_argnums=0)(cfg, params, ids, mask))
    valid = mask.astype(bool)
    np.testing.assert_allclose(ours[valid], expected[valid], atol=1e-5, rtol=0)

    st_mode = {"mean": "mean", "cls": "cls", "last": "lasttoken"}[pooling]
    st_pool = Pooling(cfg.hidden_size, pooling_mode=st_mode)
    features = {"token_embeddings": torch.tensor(expected), "attention_mask": torch.tensor(mask)}
    expected_pooled = st_pool(features)["sentence_embedding"].numpy()
    pooled = embedding.embed(cfg, params, ids, mask, pooling=pooling, normalize=False)
    np.testing.assert_allclose(np.asarray(pooled), expected_pooled, atol=1e-5, rtol=0)


def test_xlmr_position_ids_start_after_padding_idx(tmp_path):
    """Left-padded XLM-R rows get shifted positions in HF; ours must follow the ids too."""
    torch_model = randomize(xlmr(), seed=3)
    cfg, params = load_hf(save(torch_model, tmp_path))
    ids, mask = batch(97, 1, "left", seed=5)
    ours = np.asarray(models.apply(cfg, params, ids, mask))
    expected = torch_hidden(torch_model, ids, mask)
    valid = mask.astype(bool)
    np.testing.assert_allclose(ours[valid], expected[valid], atol=1e-5, rtol=0)


def test_bfloat16_compute_stays_close_to_float32(tmp_path):
    torch_model = randomize(qwen3(), seed=7)
    cfg, params = load_hf(save(torch_model, tmp_path))
    ids, mask = batch(101, 0, "left")
    f32 = embedding.embed(cfg, params, ids, mask, pooling="last")
    bf16 = embedding.embed(cfg.replace(dtype="bfloat16"), params, ids, mask, pooling="last")
    assert bf16.dtype == np.float32
    cosine = np.sum(np.asarray(f32) * np.asarray(bf16), axis=-1)
    assert cosine.min() > 0.995, cosine
    assert not np.allclose(np.asarray(f32), np.asarray(bf16), atol=1e-6)  # bf16 really ran


def test_bidirectional_qwen3_switch_changes_attention(tmp_path):
    torch_model = randomize(qwen3(), seed=9)
    cfg, params = load_hf(save(torch_model, tmp_path))
    ids, mask = batch(101, 0, "right", lengths=(9, 9))
    # One layer: the last token sees every token either way, the first only when bidirectional.
    one = cfg.replace(num_layers=1)
    params = {**params, "layers": {"0": params["layers"]["0"]}}
    causal = np.asarray(models.apply(one, params, ids, mask))
    bidir = np.asarray(models.apply(one.replace(causal=False), params, ids, mask))
    np.testing.assert_allclose(causal[:, -1], bidir[:, -1], atol=1e-5)
    assert np.abs(causal[:, 0] - bidir[:, 0]).max() > 1e-2


def test_init_matches_the_loaded_structure(tmp_path):
    torch_model = randomize(bert(), seed=1)
    cfg, params = load_hf(save(torch_model, tmp_path))
    fresh = models.init(cfg, jax.random.key(0))
    assert jax.tree.structure(fresh) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(fresh), jax.tree.leaves(params), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype == np.float32

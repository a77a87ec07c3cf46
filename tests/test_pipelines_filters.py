"""Filters (language id, length, script, exact and near dedup) and hard-negative mining."""

from collections import Counter

import numpy as np

from pipelines.filters.dedup import (
    exact_key,
    find_duplicates,
    minhash_params,
    pair_text,
    signature,
)
from pipelines.filters.langid import langid_filter
from pipelines.filters.quality import length_filter, script_filter
from pipelines.mining import MiningConfig, mine, unique_docs
from pipelines.teacher import HashingTeacher
from pipelines.text.noise import strip_accents


def rec(uid, query, positive, lang="id", task="title_description", label=-1, group="g"):
    return {
        "uid": uid,
        "task": task,
        "lang": lang,
        "query": query,
        "positive": positive,
        "negatives": [],
        "label": label,
        "label_path": [],
        "positive_label": label,
        "group_id": group,
        "split": "train",
        "source": "catalog",
        "doc_id": "",
    }


MS = "Diperbuat daripada bahan berkualiti, selesa dan tahan lama. Sila hubungi kami."
ID = "Bahan berkualitas, nyaman dipakai dan awet. Silakan chat admin jika ada pertanyaan."
PT = "Feito com materiais de alta qualidade, confortável e durável. Siga nossa loja."
EN = "Made with high quality materials, comfortable and durable. Follow our shop."
VI = "Chất liệu cao cấp, sử dụng thoải mái và bền bỉ. Inbox shop nếu bạn cần tư vấn thêm nhé."


def test_langid_keeps_right_and_confusable_languages_and_rejects_others():
    records = [
        rec("a", "Kaos polos", ID, lang="id"),  # short query skipped, description is id
        rec("b", "Baju T", MS, lang="id"),  # Malay text filed as Indonesian: confusable, kept
        rec("c", "Áo thun", PT, lang="vi"),  # Portuguese in a Vietnamese record: rejected
        rec("d", "Kaos", EN, lang="tl"),  # English in a Filipino listing: allowed
        rec("e", "Áo thun nam", VI, lang="vi"),
        rec("f", VI, PT, lang="vi>pt", task="cross_lingual"),  # each side its own language
    ]
    stats = Counter()
    kept, rejects = langid_filter(records, stats=stats)
    assert [r["uid"] for r in kept] == ["a", "b", "d", "e", "f"]
    assert [r["uid"] for r in rejects] == ["c"]
    assert (
        rejects[0]["reason"].startswith("language pt")
        and "where vi was expected" in rejects[0]["reason"]
    )
    assert stats["agree_confusable"] >= 1 and stats["english_allowed"] == 1
    strict, _ = langid_filter(records, allow_english=False, confusable=())
    assert "b" not in {r["uid"] for r in strict} and "d" not in {r["uid"] for r in strict}


def test_length_and_script_filters():
    kept, rejects = length_filter(
        [rec("a", "x", "ok ok"), rec("b", "same", "Same"), rec("c", "fine", "fine text")]
    )
    assert [r["uid"] for r in kept] == ["c"]
    assert {r["reason"] for r in rejects} == {
        "text shorter than 2 characters",
        "query equals positive",
    }
    thai = [
        rec("t1", "เสื้อยืด สีดำ Uniqlo", "เสื้อยืดผู้หญิง", lang="th"),
        rec("t2", "Black T-Shirt Uniqlo", "T-Shirts", lang="th"),
    ]
    kept, rejects = script_filter(thai)
    assert [r["uid"] for r in kept] == ["t1"] and "0% thai letters" in rejects[0]["reason"]


def test_dedup_exact_and_near_keep_the_smallest_uid():
    base = "Kaos Polos Pria Cotton Combed 30s Hitam Murah Original Premium Ready Stock"
    records = [
        rec("q/3", base, "Kaos Pria"),
        rec("q/1", base.lower() + "  ", "kaos pria"),  # the same after normalisation
        rec("q/2", base.replace("Murah", "Murrah"), "Kaos Pria"),  # one typo: near duplicate
        rec("q/4", "Celana Jeans Wanita Biru Denim Slim Fit Premium", "Celana Jeans"),
        rec("q/5", base, "Kaos Pria", task="title_category"),  # another task: not a duplicate
    ]
    a, b = minhash_params(128)
    sigs = np.stack([signature(pair_text(r), a, b) for r in records])
    args = (
        [r["uid"] for r in records],
        [r["task"] for r in records],
        [exact_key(r) for r in records],
    )
    drops = find_duplicates(*args, sigs, bands=16, threshold=0.8)
    assert drops == {"q/3": "exact duplicate of q/1", "q/2": "near duplicate of q/1"}
    order = [4, 2, 0, 3, 1]  # any order of arrival gives the same decision
    shuffled = find_duplicates(
        *[[x[i] for i in order] for x in args], sigs[order], bands=16, threshold=0.8
    )
    assert shuffled == drops
    assert find_duplicates(*args, None) == {"q/3": "exact duplicate of q/1"}


def test_mining_excludes_positive_close_scores_same_label_and_group():
    docs_records = [
        rec("r0", "q0", "kaos polos hitam pria", task="title_category", label=1, group="g0"),
        rec(
            "r1", "q1", "kaos polos hitam pria premium", task="title_category", label=1, group="g1"
        ),
        rec("r2", "q2", "kaos polos putih pria", task="title_category", label=2, group="g0"),
        rec("r3", "q3", "kaos polos abu pria", task="title_category", label=3, group="g3"),
        rec("r4", "q4", "celana jeans biru", task="title_category", label=4, group="g4"),
        rec("r5", "q5", "kaos polos hitam pria ori", task="title_category", label=5, group="g5"),
    ]
    teacher = HashingTeacher()
    docs = unique_docs(docs_records)
    vectors = teacher.encode([d["text"] for d in docs])
    query = rec(
        "x",
        "kaos polos hitam pria murah",
        "kaos polos hitam pria",
        task="title_category",
        label=1,
        group="g0",
    )
    cfg = MiningConfig(num_negatives=3, top_k=10, max_score_fraction=0.97)
    stats = Counter()
    out = dict(query)
    mine([out], teacher.encode([query["query"]]), docs, vectors, cfg, stats)
    negs = out["negatives"]
    assert "kaos polos hitam pria" not in negs  # the positive
    assert "kaos polos hitam pria premium" not in negs  # same label (1)
    assert "kaos polos putih pria" not in negs  # same group (g0)
    assert negs[:2] == ["kaos polos hitam pria ori", "kaos polos abu pria"]  # hardest first
    assert out["negative_labels"][:2] == [5, 3]  # each negative's class, for the class mask
    assert stats["dropped_same_label"] >= 1 and stats["dropped_same_group"] >= 1
    # A candidate scoring near the positive is a likely unlabelled positive: dropped.
    close, labelled = dict(query), dict(query)
    cfg = MiningConfig(num_negatives=3, top_k=10, max_score_fraction=0.5)
    mine([close], teacher.encode([query["query"]]), docs, vectors, cfg, stats)
    assert "kaos polos hitam pria ori" not in close["negatives"]
    assert stats["dropped_above_score_fraction"] >= 1
    # A labelled task's false negatives are its own class: no score ceiling there.
    mine([labelled], teacher.encode([query["query"]]), docs, vectors, cfg, stats, ceiling=False)
    assert labelled["negatives"][0] == "kaos polos hitam pria ori"


def test_noise_helpers():
    assert strip_accents("Áo thun màu đen") == "Ao thun mau den"

"""`TrainBatch`: built from records (hard-negative labels included), placed through `jax.jit`
shardings on 8 devices unchanged, and its negative labels drive CAM's class mask."""

import dataclasses

import jax
import numpy as np
from jax.sharding import PartitionSpec

from compass_jax import sharding, train
from compass_jax.data.batch import TrainBatch
from compass_jax.data.pairs import PairRecord, tokenize_batch
from compass_jax.data.tfds_source import TaskSource
from compass_jax.losses import LossSettings, cam_infonce


def fake_tokenizer(texts, *, truncation, max_length, padding, return_tensors):
    """Word ids (1 + a stable hash), padded to `max_length`: enough to check shapes and masks."""
    assert truncation and padding == "max_length" and return_tensors == "np"
    ids = np.zeros((len(texts), max_length), np.int64)
    for row, text in enumerate(texts):
        words = [1 + sum(map(ord, w)) % 97 for w in text.split()][:max_length]
        ids[row, : len(words)] = words
    return {"input_ids": ids, "attention_mask": (ids > 0).astype(np.int64)}


def records(n=16):
    """Labels cycle 0, 1, 2, -1; even examples have one hard negative, odd ones two, labelled
    `(i + slot) % 3` (so some share their own example's class) except those of examples 3, 7, ...
    (unlabelled)."""
    out = []
    for i in range(n):
        label = (0, 1, 2, -1)[i % 4]
        negatives = (f"neg {i} a", f"neg {i} b")[: 1 + i % 2]
        labels = tuple(-1 if i % 4 == 3 else (i + k) % 3 for k in range(len(negatives)))
        out.append(PairRecord(f"query {i}", f"doc {i}", negatives, label, "t", "en", labels))
    return out


def tokenize(rows, g=2):
    return tokenize_batch(rows, fake_tokenizer, query_prefix="q: ", document_prefix="d: ",
                          query_length=5, document_length=7, num_negatives=g)  # fmt: skip


def test_tokenize_batch_fills_every_field_from_the_records():
    rows = records(4)
    batch = tokenize(rows)
    assert isinstance(batch, TrainBatch) and batch.num_negatives == 2
    assert batch.query_ids.shape == (4, 5) and batch.positive_ids.shape == (4, 7)
    # Unpacked: one row per text, negatives slot by slot (example * 2 + slot).
    assert batch.negative_ids.shape == batch.negative_segment_ids.shape == (8, 7)
    np.testing.assert_array_equal(batch.negative_texts[:, 0], [0, -1, 2, 3, 4, -1, 6, 7])
    np.testing.assert_array_equal(batch.query_texts[:, 0], [0, 1, 2, 3])
    np.testing.assert_array_equal(batch.negative_valid, [[1, 0], [1, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(batch.label, [r.label for r in rows])
    np.testing.assert_array_equal(batch.negative_label, [[0, -1], [1, 2], [2, -1], [-1, -1]])
    # An empty slot attends to nothing; a filled one to its tokens ("d: neg 1 b" is 4 words).
    assert batch.negative_segment_ids[1].sum() == 0
    assert batch.negative_segment_ids[3].sum() == 4
    np.testing.assert_array_equal(batch.query_segment_ids[0], [1, 1, 1, 0, 0])
    assert batch.negative_hash.shape == (4, 2) and batch.query_hash.dtype == np.int32
    # No negatives at all: zero slots, the other fields unchanged.
    none = tokenize(rows, g=0)
    assert none.negative_ids.shape == (0, 7) and none.negative_label.shape == (4, 0)
    np.testing.assert_array_equal(none.query_ids, batch.query_ids)


def test_packed_towers_hold_every_text_once_with_its_own_tokens():
    rows = records(16)
    plain = tokenize(rows)
    packed = tokenize_batch(rows, fake_tokenizer, query_prefix="q: ", document_prefix="d: ",
                            query_length=8, document_length=16, num_negatives=2, pack=True,
                            row_multiple=4)  # fmt: skip
    wide = tokenize_batch(rows, fake_tokenizer, query_prefix="q: ", document_prefix="d: ",
                          query_length=8, document_length=16, num_negatives=2)  # fmt: skip
    assert plain.negative_ids.shape[0] == 32
    for name in ("query", "positive", "negative"):
        ids, seg, texts = packed.tower(name)
        ref_ids, ref_seg, ref_texts = wide.tower(name)
        assert ids.shape[0] % 4 == 0 and ids.shape[0] < ref_ids.shape[0], name
        assert texts.shape[1] == ids.shape[1] // 4  # up to length / 4 texts per row
        # every text of the unpacked tower, and no other, appears once, with its own tokens
        assert sorted(texts[texts >= 0]) == sorted(ref_texts[ref_texts >= 0]), name
        for r, k in zip(*np.nonzero(texts >= 0), strict=True):
            t = texts[r, k]
            np.testing.assert_array_equal(ids[r][seg[r] == k + 1], ref_ids[t][ref_seg[t] > 0])
    assert packed.real_tokens()[0] == wide.real_tokens()[0]
    assert packed.real_tokens()[1] < wide.real_tokens()[1] / 2


def test_train_batch_round_trips_through_jit_shardings():
    local = tokenize(records(16))
    mesh = sharding.make_mesh(2, 4)
    shardings = train.batch_shardings(mesh)
    placed = jax.device_put(local, shardings)
    out = jax.jit(lambda b: b, in_shardings=(shardings,), out_shardings=shardings)(placed)
    assert isinstance(out, TrainBatch)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(out)]
    assert paths == [f".{f.name}" for f in dataclasses.fields(TrainBatch)]
    for field in dataclasses.fields(TrainBatch):
        value = getattr(out, field.name)
        np.testing.assert_array_equal(value, getattr(local, field.name), err_msg=field.name)
        assert value.sharding.spec == PartitionSpec(("data", "fsdp")), field.name
    # Each device holds the rows of the same examples' metadata fields: two examples each.
    for q, n in zip(out.label.addressable_shards, out.negative_valid.addressable_shards,
                    strict=True):  # fmt: skip
        assert q.device == n.device and q.index[0] == n.index[0]
        assert q.index[0].stop - q.index[0].start == 2


def _class_masked(batch: TrainBatch) -> set[tuple[int, str, int, int]]:
    """(anchor, kind, owner, slot) entries the class mask removes, by the rule in words: a
    candidate of another example whose label equals the anchor's (>= 0)."""
    b, g = batch.negative_valid.shape
    out = set()
    for i in range(b):
        if batch.label[i] < 0:
            continue
        for j in range(b):
            if j != i and batch.label[j] == batch.label[i]:
                out.add((i, "positive", j, 0))
            for k in range(g):
                valid, label = batch.negative_valid[j, k], batch.negative_label[j, k]
                if j != i and valid and label == batch.label[i]:
                    out.add((i, "negative", j, k))
    return out


def test_negative_labels_from_the_data_drive_the_class_mask():
    local = tokenize(records(16))
    b, g = local.negative_valid.shape
    rng = np.random.default_rng(0)
    unit = lambda n: (x := rng.normal(size=(n, 8))) / np.linalg.norm(x, axis=1, keepdims=True)
    embs = {"query": unit(b), "positive": unit(b), "negatives": unit(b * g)}
    settings = LossSettings(duplicate_mask=False)
    _, metrics = cam_infonce(train.contrastive_batch(embs, local), settings)
    expected = _class_masked(local)
    assert float(metrics["masked_total"]) == len(expected)
    negatives = {e for e in expected if e[1] == "negative"}
    assert negatives  # other examples' hard negatives of the anchor's class are removed
    # An anchor's own hard negatives stay even when they carry its class: there are such here,
    # and the count above, which excludes them, is exact.
    own_same_class = [
        (i, k) for i in range(b) for k in range(g)
        if local.negative_valid[i, k] and local.label[i] >= 0
        and local.negative_label[i, k] == local.label[i]
    ]  # fmt: skip
    assert own_same_class
    # Unlabelled negatives (what the batch carried before) mask only positives.
    unlabelled = dataclasses.replace(local, negative_label=np.full((b, g), -1, np.int32))
    _, plain = cam_infonce(train.contrastive_batch(embs, unlabelled), settings)
    assert float(plain["masked_total"]) == len(expected) - len(negatives)


def test_tfds_records_read_negative_labels_when_the_build_has_them():
    raw = {"query": b"q", "positive": b"p", "negatives": [b"n1", b"n2"], "label": 3,
           "task": b"t", "lang": b"id"}  # fmt: skip
    assert TaskSource._record(raw).negative_labels == (-1, -1)
    labelled = TaskSource._record({**raw, "negative_labels": np.array([4, -1])})
    assert labelled.negative_labels == (4, -1)
    assert all(type(x) is int for x in labelled.negative_labels)

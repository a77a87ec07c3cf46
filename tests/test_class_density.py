"""The class-density batch sampler: batches reach the target same-class share, are deterministic,
resume exactly, split over processes like natural batches, and refuse what cannot be made."""

import json

import numpy as np
import pytest

from compass_jax.data.class_density import group_sizes
from compass_jax.data.mixture import MixtureReader
from compass_jax.data.pairs import PairRecord


def labelled(task="clustering", classes=18, seed=0, n=900):
    """`n` records of `classes` classes of uneven sizes (as catalog categories are)."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(classes, 3.0))
    labels = rng.choice(classes, n, p=p)
    return [PairRecord(f"{task} q{i}", f"{task} p{i}", (), int(c), task, "en")
            for i, c in enumerate(labels)]  # fmt: skip


def sources():
    return {
        "clustering": labelled("clustering"),
        "title_category": labelled("title_category", seed=1),
        "query_product": [PairRecord(f"q{i}", f"p{i}", task="query_product") for i in range(200)],
    }


def measured_share(rows) -> float:
    """Per anchor, the share of the other rows with its class, averaged: counted pair by pair."""
    shares = [
        sum(o.label == r.label for j, o in enumerate(rows) if j != i) / (len(rows) - 1)
        for i, r in enumerate(rows)
    ]
    return float(np.mean(shares))


@pytest.mark.parametrize(
    ("batch", "share"), [(16, 0.0), (16, 0.1), (16, 0.3), (16, 0.6), (64, 0.1), (64, 0.6)]
)
def test_batches_reach_the_target_share(batch, share):
    density = {"clustering": share, "title_category": share}
    reader = MixtureReader(sources(), batch_size=batch, seed=4, class_density=density)
    seen = {"clustering": 0, "title_category": 0}
    for _ in range(40):
        task, rows = reader.next_batch()
        assert len(rows) == batch and {r.task for r in rows} == {task}
        if task in density:
            assert len({r.query for r in rows}) == batch  # no record twice in a batch
            assert abs(measured_share(rows) - share) <= 1 / (batch - 1) / 2, task
            seen[task] += 1
    assert all(seen.values())


def test_group_sizes_hit_exact_shares_and_stay_even():
    assert group_sizes(16, 0.6, 18) == [12, 4]  # 12 * 11 + 4 * 3 = 0.6 * 16 * 15
    assert group_sizes(16, 0.0, 18) == [1] * 16
    assert group_sizes(256, 1.0, 18) == [256]
    assert group_sizes(16, 0.2, 18) == [4] * 4  # every anchor sees 3 of 15 candidates
    assert group_sizes(256, 63 / 255, 18) == [64] * 4
    for share in (0.1, 0.3, 0.6):
        sizes = group_sizes(256, share, 18)
        assert sum(sizes) == 256 and len(sizes) <= 18
        assert abs(sum(n * (n - 1) for n in sizes) / (256 * 255) - share) <= 0.5 / 255
    # fewer classes than rows: the lowest share spreads the rows evenly over every class
    low = group_sizes(256, 0.0, 18)
    assert len(low) == 18 and max(low) - min(low) <= 1


def test_natural_tasks_keep_their_order_and_the_draws_are_deterministic():
    density = {"clustering": 0.3}
    a = MixtureReader(sources(), batch_size=16, seed=2, class_density=density)
    b = MixtureReader(sources(), batch_size=16, seed=2, class_density=density)
    plain = MixtureReader(sources(), batch_size=16, seed=2)
    batches = [a.next_batch() for _ in range(30)]
    assert batches == [b.next_batch() for _ in range(30)]
    for (task, rows), (plain_task, plain_rows) in zip(
        batches, (plain.next_batch() for _ in range(30)), strict=True
    ):
        assert task == plain_task  # the task schedule does not depend on the sampler
        assert (rows == plain_rows) == (task != "clustering")
    other = MixtureReader(sources(), batch_size=16, seed=3, class_density=density)
    dense = lambda r: [rows for t, rows in (r.next_batch() for _ in range(30)) if t == "clustering"]
    assert dense(other) != dense(MixtureReader(sources(), batch_size=16, seed=2,
                                               class_density=density))  # fmt: skip


def test_resume_continues_exactly_and_refuses_another_density():
    density = {"clustering": 0.6, "title_category": 0.1}
    a = MixtureReader(sources(), batch_size=16, seed=5, class_density=density)
    for _ in range(23):
        a.next_batch()
    state = json.loads(json.dumps(a.state()))
    expected = [a.next_batch() for _ in range(20)]
    b = MixtureReader(sources(), batch_size=16, seed=5, class_density=density)
    b.restore(state)
    assert [b.next_batch() for _ in range(20)] == expected
    with pytest.raises(ValueError, match="class_density"):
        MixtureReader(sources(), batch_size=16, seed=5).restore(state)


def test_processes_split_the_dense_global_batch():
    density = {"clustering": 0.3}
    full = MixtureReader(sources(), batch_size=12, seed=2, class_density=density)
    parts = [
        MixtureReader(
            sources(),
            batch_size=12,
            seed=2,
            process_index=i,
            process_count=3,
            class_density=density,
        )
        for i in range(3)
    ]
    for _ in range(20):
        _, rows = full.next_global_batch()
        assert [r for p in parts for r in p.next_batch()[1]] == rows


def test_refuses_what_cannot_be_drawn():
    with pytest.raises(ValueError, match="without a class"):
        MixtureReader(sources(), batch_size=16, class_density={"query_product": 0.1})
    with pytest.raises(ValueError, match="closest is"):  # 18 classes: no 64 distinct ones
        MixtureReader(sources(), batch_size=64, class_density={"clustering": 0.0})
    with pytest.raises(ValueError, match="absent from the data"):
        MixtureReader(sources(), batch_size=16, class_density={"search": 0.1})
    small = {"clustering": labelled(classes=3, n=20)}
    with pytest.raises(ValueError, match="needs groups"):
        MixtureReader(small, batch_size=16, class_density={"clustering": 0.0})

"""The JSONL contrastive-record reader: validation names file and line; batches are
task-homogeneous, deterministic, split across processes, and resume from their state."""

import json

import numpy as np
import pytest

from compass_jax.data.mixture import PairReader
from compass_jax.data.pairs import RecordError, read_records


def _write(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


def _records(n=40):
    return [
        {"query": f"q{i}", "positive": f"p{i}", "negatives": [f"n{i}"], "label": i % 3,
         "task": "classification" if i % 4 == 0 else "retrieval"}
        for i in range(n)
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"query": "q", "positive": ""}, "field 'positive' must be a non-empty string"),
        ({"query": "q", "positive": "p", "label": "3"}, "field 'label' must be an integer"),
        ({"query": "q", "positive": "p", "negatives": "n"}, "field 'negatives' must be a list"),
    ],
)
def test_bad_records_name_file_and_line(tmp_path, bad, message):
    path = _write(tmp_path / "train.jsonl", [_records(1)[0], bad])
    with pytest.raises(RecordError, match=rf"train\.jsonl:2: {message}"):
        read_records(path)


def test_batches_are_task_homogeneous_deterministic_and_resumable(tmp_path):
    records = read_records(_write(tmp_path / "t.jsonl", _records()))
    reader = PairReader(
        records, batch_size=4, seed=3, task_weights={"retrieval": 3, "classification": 1}
    )
    batches = [reader.next_batch() for _ in range(200)]
    for task, rows in batches:
        assert {r.task for r in rows} == {task}
    share = np.mean([task == "retrieval" for task, _ in batches])
    assert abs(share - 0.75) < 0.1  # the mixture weights, within sampling error

    again = PairReader(
        records, batch_size=4, seed=3, task_weights={"retrieval": 3, "classification": 1}
    )
    for _ in range(50):
        again.next_batch()
    state = json.loads(json.dumps(again.state()))
    resumed = PairReader(
        records, batch_size=4, seed=3, task_weights={"retrieval": 3, "classification": 1}
    )
    resumed.restore(state)
    assert [resumed.next_batch() for _ in range(150)] == batches[50:]


def test_processes_take_disjoint_slices_of_the_same_global_batch(tmp_path):
    records = read_records(_write(tmp_path / "t.jsonl", _records()))
    whole = PairReader(records, batch_size=8, seed=1).next_batch()
    readers = [PairReader(records, batch_size=8, seed=1, process_index=i, process_count=2)
               for i in range(2)]  # fmt: skip
    parts = [r.next_batch() for r in readers]
    assert parts[0][0] == parts[1][0] == whole[0]
    assert parts[0][1] + parts[1][1] == whole[1]

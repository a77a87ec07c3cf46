"""The JSONL contrastive-record reader: validation names file and line; batches are
task-homogeneous, deterministic, split across processes, and resume from their state."""

import json

import numpy as np
import pytest

from compass_jax.data.mixture import PairReader
from compass_jax.data.pairs import PairRecord, RecordError, read_records


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
        ({"query": "q", "positive": "p", "negatives": ["n"], "negative_labels": [1, 2]},
         "field 'negative_labels' has 2 entries for 1 negatives"),
        ({"query": "q", "positive": "p", "negatives": ["n"], "negative_labels": [True]},
         "field 'negative_labels' must be a list of integers >= -1"),
        ({"query": "q", "positive": "p", "negatives": ["n"], "negative_labels": [-2]},
         "field 'negative_labels' must be a list of integers >= -1"),
        ({"query": "q", "positive": "p", "negatives": ["n"], "negative_labels": 3},
         "field 'negative_labels' must be a list of integers >= -1"),
    ],
)  # fmt: skip
def test_bad_records_name_file_and_line(tmp_path, bad, message):
    path = _write(tmp_path / "train.jsonl", [_records(1)[0], bad])
    with pytest.raises(RecordError, match=rf"train\.jsonl:2: {message}"):
        read_records(path)


def test_negative_labels_are_read_and_default_to_unlabelled(tmp_path):
    one = {"query": "q", "positive": "p", "negatives": ["n1"]}
    rows = [{**one, "negatives": ["n1", "n2"], "negative_labels": [4, -1]}, one,
            {**one, "negative_labels": None}]  # fmt: skip
    labelled, absent, null = read_records(_write(tmp_path / "t.jsonl", rows))
    assert labelled.negative_labels == (4, -1)
    assert absent.negative_labels == null.negative_labels == (-1,)
    assert PairRecord("q", "p", ("n1", "n2")).negative_labels == (-1, -1)
    # The JSONL export reads back into an equal record.
    again = read_records(_write(tmp_path / "again.jsonl", [labelled.to_json()]))
    assert again == [labelled]
    with pytest.raises(ValueError, match="1 negative_labels for 2 negatives"):
        PairRecord("q", "p", ("n1", "n2"), negative_labels=(3,))
    (tmp_path / "broken.jsonl").write_text('{"query": "q", "positive": "p"}\n{"query": NaN}\n')
    with pytest.raises(ValueError, match=r"broken\.jsonl:2: NaN is not valid JSON"):
        read_records(tmp_path / "broken.jsonl")


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

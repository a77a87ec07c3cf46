"""TFDS output: one dataset per task, ArrayRecord shards (one per partition and split), and the
metadata (`dataset_info.json`, `features.json`) that makes the folder a TFDS dataset, readable
with `tfds.builder_from_directory(dir).as_data_source(split)` and no TensorFlow.

Shards are written by partition workers independently; the metadata is written once every
partition is done, from the per-shard record counts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import numpy as np

from compass_jax.atomic import atomic_path
from compass_jax.data.text_hash import text_hash

FILE_FORMAT = "array_record"


def features():
    import tensorflow_datasets as tfds

    text = tfds.features.Text()
    return tfds.features.FeaturesDict(
        {
            "uid": tfds.features.Text(doc="stable record id: task/product id/..."),
            "task": tfds.features.Text(),
            "lang": tfds.features.Text(
                doc="language code; cross-lingual records: 'query-positive'"
            ),
            "query": text,
            "positive": text,
            "negatives": tfds.features.Sequence(tfds.features.Text(), doc="mined hard negatives"),
            "label": tfds.features.Scalar(np.int64, doc="class id at the configured level, or -1"),
            "label_path": tfds.features.Sequence(np.int64, doc="class ids of every category level"),
            "group_id": tfds.features.Text(doc="product group: the same product in every language"),
            "source": tfds.features.Text(
                doc="catalog | synthetic:<backend> | translation:<backend>"
            ),
            "query_hash": tfds.features.Scalar(np.int32, doc="compass_jax.data.text_hash(query)"),
            "positive_hash": tfds.features.Scalar(np.int32),
            "negative_hashes": tfds.features.Sequence(np.int32),
        }
    )


def example(record: Mapping) -> dict:
    return {
        "uid": record["uid"],
        "task": record["task"],
        "lang": record["lang"],
        "query": record["query"],
        "positive": record["positive"],
        "negatives": list(record["negatives"]),
        "label": int(record["label"]),
        "label_path": list(record["label_path"]),
        "group_id": record["group_id"],
        "source": record["source"],
        "query_hash": text_hash(record["query"]),
        "positive_hash": text_hash(record["positive"]),
        "negative_hashes": [text_hash(n) for n in record["negatives"]],
    }


def shard_path(root: str, task: str, version: str, split: str, index: int, count: int) -> str:
    name = f"{task}-{split}.{FILE_FORMAT}-{index:05d}-of-{count:05d}"
    return os.path.join(root, task, version, name)


def write_shard(path: str, records: Sequence[Mapping], feature_spec) -> int:
    """One ArrayRecord file, written under a temporary name and renamed when complete."""
    from array_record.python import array_record_module

    with atomic_path(path) as tmp:
        # group_size:1 keeps every record independently addressable: random access for readers.
        writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
        for rec in records:
            writer.write(feature_spec.serialize_example(example(rec)))
        writer.close()
    return len(records)


def write_metadata(
    root: str,
    task: str,
    version: str,
    description: str,
    shard_lengths: Mapping[str, Sequence[int]],
    feature_spec,
) -> str:
    import tensorflow_datasets as tfds

    data_dir = os.path.join(root, task, version)
    splits = [
        tfds.core.SplitInfo(
            name=split,
            shard_lengths=list(lengths),
            num_bytes=sum(
                os.path.getsize(shard_path(root, task, version, split, i, len(lengths)))
                for i in range(len(lengths))
            ),
        )
        for split, lengths in sorted(shard_lengths.items())
    ]
    tfds.folder_dataset.write_metadata(
        data_dir=data_dir,
        features=feature_spec,
        split_infos=splits,
        description=description,
        check_data=False,
    )
    _normalise_info(os.path.join(data_dir, "dataset_info.json"))
    return data_dir


def _normalise_info(path: str) -> None:
    """Sort the JSON keys, so that equal builds give byte-identical metadata."""
    with open(path, encoding="utf-8") as f:
        info = json.load(f)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(info, f, ensure_ascii=False, indent=2, sort_keys=True)
        f.write("\n")

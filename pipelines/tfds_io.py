"""TFDS output: one dataset per task, ArrayRecord shards (one per partition and split), and the
metadata (`dataset_info.json`, `features.json`) that makes the folder a TFDS dataset, readable
with `tfds.builder_from_directory(dir).as_data_source(split)` and no TensorFlow.

Shards are written independently (one per task, split and partition, records in uid order);
the metadata is written once every shard is done, from the per-shard record counts.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence

import numpy as np

from compass_jax import jsonio
from compass_jax.atomic import atomic_path
from compass_jax.data.text_hash import text_hash
from pipelines.hashing import split_of

FILE_FORMAT = "array_record"


@functools.lru_cache(maxsize=1)
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
            "negative_labels": tfds.features.Sequence(
                np.int64,
                doc="class id (at tasks.category_level) of each negative's product, -1 unknown",
            ),
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
        "negative_labels": [int(x) for x in record["negative_labels"]],
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


@functools.lru_cache(maxsize=1)
def _serializer(feature_spec):
    from tensorflow_datasets.core.example_serializer import ExampleSerializer

    return ExampleSerializer(feature_spec.get_serialized_info())


def serialize(feature_spec, record: Mapping) -> bytes:
    """The record's `tf.train.Example` bytes, the same in every process: protobuf's default
    serialization orders the feature map by a per-process hash (upb), so equal builds would
    differ in bytes; `deterministic=True` sorts it."""
    proto = _serializer(feature_spec).get_tf_example(feature_spec.encode_example(example(record)))
    return proto.SerializeToString(deterministic=True)


def write_partition(root: str, cfg, task: str, split: str, index: int, records) -> int:
    """Partition `index`'s shard of (task, split): its records in uid order, each checked to
    sit in its group's split (the build's guarantee, held at the last step before disk)."""
    records = sorted(records, key=lambda r: r["uid"])
    for r in records:
        if r["split"] != split or split_of(r["group_id"], cfg.seed, cfg.splits) != split:
            raise AssertionError(f"record {r['uid']} (group {r['group_id']}) is not in {split}")
    path = shard_path(root, task, cfg.version, split, index, cfg.partitions)
    return write_shard(path, records, features())


def write_shard(path: str, records: Sequence[Mapping], feature_spec) -> int:
    """One ArrayRecord file, written under a temporary name and renamed when complete."""
    from array_record.python import array_record_module

    with atomic_path(path) as tmp:
        # group_size:1 keeps every record independently addressable: random access for readers.
        writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
        for rec in records:
            writer.write(serialize(feature_spec, rec))
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
    jsonio.write_json(path, sort_keys(jsonio.read_json(path)), indent=2)


def sort_keys(value):
    """`value` with every object's keys in sorted order: equal contents, equal bytes."""
    if isinstance(value, dict):
        return {k: sort_keys(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [sort_keys(v) for v in value]
    return value

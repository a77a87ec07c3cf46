"""Data construction pipelines: catalog -> task records -> filtered, mined TFDS datasets.

`compass_jax.data` reads what these stages write. Stages are sharded by input (catalog files,
then hash partitions of `group_id`), idempotent and resumable; see `pipelines.build`.
"""

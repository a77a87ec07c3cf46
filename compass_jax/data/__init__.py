"""Training data: readers, task-homogeneous batching, tokenisation, class ids, text hashes.

- `pairs`: the JSONL record reader (`read_records`) and `tokenize_batch`.
- `batch`: `TrainBatch`, the typed pytree a training step takes.
- `mixture`: `MixtureReader`, the same batches over the pipelines' TFDS datasets;
  `open_reader(path, ...)` picks the reader for a JSONL file or a build directory.
- `tfds_source`: random-access `PairRecord` views of one task's split (no TensorFlow).
- `bucketing`: `tokenize_bucketed`, `tokenize_batch` padded to length buckets.
- `packing`: several texts per row in fixed-shape batches (`Layout`, `pack`, `pack_fixed`).
- `text_hash`: stable text hashes for CAM's duplicate mask and for dedup.
"""

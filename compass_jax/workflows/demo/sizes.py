"""What `compass-jax demo --size` scales: the data, the training runs and the merge sweep."""

from __future__ import annotations

import dataclasses

# The tasks the demo trains on (the build's other tasks stay out of the training JSONL).
TRAIN_TASKS = ("query_product", "synthetic_query", "title_category", "clustering", "cross_lingual")


@dataclasses.dataclass(frozen=True)
class Size:
    """One `--size`: the data, the training run and the sweep."""

    products: int  # product groups of the generated catalog
    steps: int  # training steps of each run
    batch_size: int  # global batch (GradCache chunks of `chunk` rows)
    chunk: int
    query_length: int
    document_length: int
    trained_layers: int  # the top layers that train (embeddings and lower layers frozen)
    learning_rate: float
    merge_ts: tuple[float, ...]
    eval_per_task: int  # held-out records per evaluation task (a seeded sample)
    task_weights: tuple[tuple[str, float], ...] = (
        ("query_product", 1.0), ("synthetic_query", 0.5), ("title_category", 1.0),
        ("clustering", 2.0), ("cross_lingual", 0.5),
    )  # fmt: skip


SIZES = {
    # A smoke test of every stage (minutes on a laptop; scores are not meaningful).
    "tiny": Size(150, 2, 32, 16, 16, 16, 1, 1e-4, (0.5,), 20),
    # The README's run: a 2-core CPU in about 20 minutes.
    "small": Size(1500, 16, 256, 128, 24, 24, 3, 1e-4, (0.25, 0.5, 0.75), 200),
    # One GPU or a CPU host with many cores.
    "medium": Size(5000, 200, 512, 128, 32, 48, 6, 5e-5, (0.2, 0.4, 0.6, 0.8), 300),
    # The full bundled catalog, every encoder layer trained.
    "large": Size(20000, 2000, 1024, 256, 48, 64, 12, 2e-5, (0.1, 0.2, 0.3, 0.4, 0.5, 0.7), 400),
}

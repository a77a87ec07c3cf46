"""What `compass-jax demo --size` scales: the data, the training runs, the seeds, the merge sweep
and the CAM-density experiment."""

from __future__ import annotations

import dataclasses

# The tasks the demo trains on (the build's other tasks stay out of the training JSONL).
TRAIN_TASKS = ("query_product", "synthetic_query", "title_category", "clustering", "cross_lingual")
# The class-labelled tasks: what CAM's class mask acts on and the density experiment varies.
CLASS_TASKS = ("title_category", "clustering")


@dataclasses.dataclass(frozen=True)
class Density:
    """The CAM-density experiment (`--experiment cam-density`): CAM and no-CAM trained on the
    class-labelled tasks alone, their batches drawn at each same-class share, `seeds` times."""

    shares: tuple[float, ...]  # target same-class shares of the in-batch candidates
    seeds: int
    steps: int  # of each run, at the size's learning rate and trained layers
    # 16 rows hold 16 of the catalog's 18 top-level classes, so a share of 0 is reachable.
    batch_size: int = 16


@dataclasses.dataclass(frozen=True)
class Size:
    """One `--size`: the data, the training runs (each arm `seeds` times), the sweep."""

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
    seeds: int  # training runs per arm (CAM, no-CAM) unless `--seeds` says otherwise
    density: Density
    # Pairs (and distractors) per language of the general suite; None: the default suite
    # (`pipelines.general_suite`, 1,000 pairs and 1,000 distractors per language).
    general_pairs: int | None = None
    task_weights: tuple[tuple[str, float], ...] = (
        ("query_product", 1.0), ("synthetic_query", 0.5), ("title_category", 1.0),
        ("clustering", 2.0), ("cross_lingual", 0.5),
    )  # fmt: skip


SIZES = {
    # A smoke test of every stage (minutes on a laptop; scores are not meaningful).
    "tiny": Size(
        150, 2, 32, 16, 16, 16, 1, 1e-4, (0.5,), 20, 2, Density((0.0, 0.6), 2, 2, 8),
        general_pairs=40,
    ),
    # The README's run: a 2-core CPU in about 20 minutes.
    # A learning rate of 1e-3 makes the tuned model forget: one run measured 4.0 points below
    # the base on the full general suite (95% CI [3.5, 4.4]) for +12.9 points of domain
    # average; its sweep chose t = 0.5, which recovered 96% of the loss and kept 95% of the gain.
    "small": Size(
        1500, 32, 128, 64, 24, 24, 3, 1e-3, (0.25, 0.5, 0.75), 200, 3,
        Density((0.0, 0.3, 0.6), 3, 100), general_pairs=500,
    ),
    # One GPU or a CPU host with many cores. Not yet measured: a learning rate meant, like
    # small's, to forget enough for the merge to matter (check the forgetting row of its report).
    "medium": Size(
        5000, 200, 512, 128, 32, 48, 6, 3e-4, (0.2, 0.4, 0.6, 0.8), 300, 3,
        Density((0.0, 0.1, 0.2, 0.3, 0.45, 0.6), 5, 400),
    ),
    # The full bundled catalog, every encoder layer trained.
    "large": Size(
        20000, 2000, 1024, 256, 48, 64, 12, 2e-5, (0.1, 0.2, 0.3, 0.4, 0.5, 0.7), 400, 5,
        Density((0.0, 0.1, 0.2, 0.3, 0.45, 0.6), 5, 2000),
    ),
}  # fmt: skip

"""Training experiment configuration: typed frozen dataclasses, read from Python config files
with a `get_config()` and changed by `--set a.b=value` overrides through `compass_jax.configio`
(which checks every field's type and the ranges declared here)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Annotated, Literal

from compass_jax.configio import Count, Fraction, NonNegative, NonNegativeInt, Range
from compass_jax.losses import LossSettings
from compass_jax.optim import OptimConfig

# A mesh axis size; -1 takes the devices the other axis leaves.
AxisSize = Annotated[int, Range(ge=-1)]


@dataclasses.dataclass(frozen=True)
class DataConfig:
    path: str = ""  # JSONL training records, or a pipelines build directory
    query_length: Count = 64
    document_length: Count = 128
    num_negatives: NonNegativeInt = 1
    task_weights: Mapping[str, NonNegative] = dataclasses.field(default_factory=dict)
    seed: NonNegativeInt = 0
    # {task: same-class share}: draw the task's batches as same-class groups with this mean
    # share of same-class rows (`compass_jax.data.class_density`); the CAM experiment's knob.
    class_density: Mapping[str, Fraction] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    data: AxisSize = -1
    fsdp: AxisSize = 1
    # Parameters smaller than this are replicated rather than split over fsdp.
    min_sharded_elements: NonNegativeInt = 2**16


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model: str = "multilingual-e5-small"  # HF directory or bundled model name
    dtype: Literal["float32", "bfloat16"] = "float32"  # compute; master params stay float32
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    # Per-task loss settings; "default" applies to tasks not named.
    losses: Mapping[str, LossSettings] = dataclasses.field(
        default_factory=lambda: {"default": LossSettings()}
    )
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    batch_size: Count = 256  # global
    gradcache_chunk: Count | None = 64  # global rows per chunk; None embeds the batch at once
    loss_block: tuple[Count, Count] = (128, 1024)  # tiles of the sharded loss
    dropout: bool = False  # use the model's hidden dropout during training
    steps: Count = 1000
    seed: NonNegativeInt = 0
    checkpoint_every: Count = 200
    keep_checkpoints: Count = 3
    log_every: Count = 1

    def loss_for(self, task: str) -> LossSettings:
        return self.losses.get(task, self.losses.get("default", LossSettings()))

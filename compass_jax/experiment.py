"""Training experiment configuration: typed frozen dataclasses, read from Python config files
with a `get_config()` and changed by `--set a.b=value` overrides through `compass_jax.configio`
(which checks every field's type and the ranges declared here)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Annotated, Literal

from compass_jax.config import Dtype
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
    dtype: Dtype = "float32"  # compute, in any spelling (bf16 reads as bfloat16); params float32
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
    # Pack several texts into each row of a tower (`data.packing`): the same loss up to rounding
    # with a fraction of the padding; False pads every text to its tower's length.
    pack: bool = True
    # Speed knobs: the same training up to rounding (benchmarks/gpu_suite.py measures them).
    attention: Literal["xla", "cudnn"] | None = None  # cudnn: fused flash attention (GPU, bf16)
    cast_params: bool = False  # cast matmul kernels to `dtype` once per step, not at every use
    # A jax.checkpoint policy over the embedding (the backward recomputes what it does not save).
    remat: Literal["dots_saveable", "dots_with_no_batch_dims_saveable"] | None = None
    xla_options: Mapping[str, bool | int | str] = dataclasses.field(default_factory=dict)
    # Host memory for a locked trunk's states (`compass_jax.trunk`; an LRU beyond it).
    trunk_cache_mb: Count = 2048
    steps: Count = 1000
    seed: NonNegativeInt = 0
    checkpoint_every: Count = 200
    keep_checkpoints: Count = 3
    log_every: Count = 1

    def loss_for(self, task: str) -> LossSettings:
        return self.losses.get(task, self.losses.get("default", LossSettings()))


# Fields a resumed run may change: how long it runs, how it logs and keeps checkpoints, and how
# the same computation is laid out (mesh, GradCache chunks, loss tiles, packing, the speed knobs:
# equal results up to float rounding). Anything else changes what the run computes, so a workdir
# refuses it. `steps` may grow: the schedule then decays over the new total from the restored
# step.
RESUMABLE_FIELDS = (
    "steps", "log_every", "checkpoint_every", "keep_checkpoints", "mesh", "gradcache_chunk",
    "loss_block", "attention", "cast_params", "remat", "xla_options", "pack", "trunk_cache_mb",
)  # fmt: skip


def _flat(value, prefix: str = "") -> dict[str, object]:
    if isinstance(value, Mapping) and value:
        return {
            k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}{key}.").items()
        }
    return {prefix.rstrip("."): list(value) if isinstance(value, tuple) else value}


def changed_fields(saved: Mapping, current: Mapping) -> dict[str, tuple[object, object]]:
    """`{dotted field: (saved value, current value)}` for the fields outside
    `RESUMABLE_FIELDS` that differ between two JSON views of a `TrainConfig`
    (`configio.to_json`), e.g. `{"losses.default.temperature": (0.05, 0.07)}`."""
    old, new = _flat(saved), _flat(current)
    resumable = lambda key: any(key == f or key.startswith(f + ".") for f in RESUMABLE_FIELDS)
    keys = sorted(k for k in old.keys() | new.keys() if not resumable(k))
    return {k: (old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k)}

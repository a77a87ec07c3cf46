"""Training experiment configuration: typed frozen dataclasses, Python config files with a
`get_config()`, and `--set a.b=value` overrides checked against the field types."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from compass_jax.config import ConfigError
from compass_jax.losses import LossSettings
from compass_jax.optim import OptimConfig


@dataclasses.dataclass(frozen=True)
class DataConfig:
    path: str = ""  # JSONL training records
    query_length: int = 64
    document_length: int = 128
    num_negatives: int = 1
    task_weights: Mapping[str, float] = dataclasses.field(default_factory=dict)
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    data: int = -1
    fsdp: int = 1
    # Parameters smaller than this are replicated rather than split over fsdp.
    min_sharded_elements: int = 2**16


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model: str = "multilingual-e5-small"  # HF directory or bundled model name
    dtype: str = "float32"  # compute dtype; master params stay float32
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    # Per-task loss settings; "default" applies to tasks not named.
    losses: Mapping[str, LossSettings] = dataclasses.field(
        default_factory=lambda: {"default": LossSettings()}
    )
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    batch_size: int = 256  # global
    gradcache_chunk: int | None = 64  # global rows per chunk; None embeds the batch at once
    loss_block: tuple[int, int] = (128, 1024)  # tiles of the sharded loss
    dropout: bool = False  # use the model's hidden dropout during training
    steps: int = 1000
    seed: int = 0
    checkpoint_every: int = 200
    keep_checkpoints: int = 3
    log_every: int = 1

    def loss_for(self, task: str) -> LossSettings:
        return self.losses.get(task, self.losses.get("default", LossSettings()))


def load_config(path: str | os.PathLike) -> TrainConfig:
    """`get_config()` of a Python config file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such config file")
    spec = importlib.util.spec_from_file_location("compass_jax_user_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path}: defines no get_config()")
    cfg = module.get_config()
    if not isinstance(cfg, TrainConfig):
        raise ConfigError(f"{path}: get_config() returned {type(cfg).__name__}, not TrainConfig")
    return cfg


def _coerce(value: Any, hint: Any, name: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, name)
            except ConfigError:
                continue
        raise ConfigError(f"--set {name}: {value!r} does not fit {hint}")
    if origin in (tuple, Sequence) or hint is tuple:
        if not isinstance(value, list | tuple):
            value = [value]
        inner = args[0] if args else Any
        return tuple(_coerce(v, inner, name) for v in value)
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and type(value) is not hint:
        raise ConfigError(f"--set {name}: expected {hint.__name__}, got {value!r}")
    return value


def apply_override(cfg: Any, dotted: str, raw: str) -> Any:
    """`cfg` with the field at `dotted` set to `raw` (parsed as JSON, else taken as a string)."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    head, _, rest = dotted.partition(".")
    if isinstance(cfg, Mapping):
        if not rest:
            return {**cfg, head: value}
        if head not in cfg:  # a new per-task entry starts from the default settings
            base = cfg.get("default")
            if base is None:
                raise ConfigError(f"--set {dotted}: no entry {head!r}")
            return {**cfg, head: apply_override(base, rest, raw)}
        return {**cfg, head: apply_override(cfg[head], rest, raw)}
    if not dataclasses.is_dataclass(cfg):
        raise ConfigError(f"--set {dotted}: cannot descend into {type(cfg).__name__}")
    fields = {f.name for f in dataclasses.fields(cfg)}
    if head not in fields:
        raise ConfigError(f"--set {dotted}: {type(cfg).__name__} has no field {head!r}")
    if rest:
        return dataclasses.replace(cfg, **{head: apply_override(getattr(cfg, head), rest, raw)})
    hint = typing.get_type_hints(type(cfg))[head]
    return dataclasses.replace(cfg, **{head: _coerce(value, hint, dotted)})


def with_overrides(cfg: TrainConfig, assignments: Sequence[str]) -> TrainConfig:
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep:
            raise ConfigError(f"--set {assignment!r}: expected key=value")
        cfg = apply_override(cfg, key.strip(), raw.strip())
    return cfg


def to_json(cfg: Any) -> Any:
    """A JSON-able view of a config (for the workdir and logs)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_json(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, Mapping):
        return {k: to_json(v) for k, v in cfg.items()}
    if isinstance(cfg, tuple | list):
        return [to_json(v) for v in cfg]
    return cfg

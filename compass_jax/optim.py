"""Optimizer from config: AdamW with warmup then cosine or linear decay, global-norm clipping,
no weight decay on norms and biases, and frozen parameters selected by path rules."""

from __future__ import annotations

import dataclasses
import re
from typing import Annotated, Any, Literal

import optax

from compass_jax import tree
from compass_jax.configio import Fraction, NonNegative, NonNegativeInt, Positive, Range

Beta = Annotated[float, Range(ge=0, lt=1)]


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    learning_rate: Positive = 2e-5
    warmup_steps: NonNegativeInt = 100
    schedule: Literal["cosine", "linear", "constant"] = "cosine"  # after warmup
    end_lr_ratio: Fraction = 0.0
    weight_decay: NonNegative = 0.01
    b1: Beta = 0.9
    b2: Beta = 0.999
    eps: Positive = 1e-8
    clip_norm: Positive | None = 1.0
    # Regexes over param paths (re.search). Excluded from weight decay:
    no_decay: tuple[str, ...] = (r"\.bias$", r"norm\.scale$", r"norm\.bias$")
    # Not trained at all (no gradient, no optimizer state):
    frozen: tuple[str, ...] = ()


def schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    peak, end = cfg.learning_rate, cfg.learning_rate * cfg.end_lr_ratio
    decay_steps = max(total_steps - cfg.warmup_steps, 1)
    warmup = optax.linear_schedule(0.0, peak, max(cfg.warmup_steps, 1))
    if cfg.schedule == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=cfg.end_lr_ratio)
    elif cfg.schedule == "linear":
        decay = optax.linear_schedule(peak, end, decay_steps)
    elif cfg.schedule == "constant":
        decay = optax.constant_schedule(peak)
    else:
        raise ValueError(
            f"optim.schedule: expected cosine | linear | constant, got {cfg.schedule!r}"
        )
    return optax.join_schedules([warmup, decay], [cfg.warmup_steps])


def is_frozen(cfg: OptimConfig, path: str) -> bool:
    return any(re.search(pattern, path) for pattern in cfg.frozen)


def split_trainable(cfg: OptimConfig, params: dict) -> tuple[dict, dict]:
    """`(trainable, frozen)` nested dicts partitioning `params` by the `frozen` rules."""
    flat = tree.flatten(params)
    trainable = {p: v for p, v in flat.items() if not is_frozen(cfg, p)}
    if not trainable:
        raise ValueError(f"optim.frozen {cfg.frozen} freezes every parameter")
    frozen = {p: v for p, v in flat.items() if is_frozen(cfg, p)}
    return tree.unflatten(trainable), tree.unflatten(frozen)


def merge_trainable(trainable: dict, frozen: dict) -> dict:
    return tree.unflatten({**tree.flatten(frozen), **tree.flatten(trainable)})


def make_optimizer(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
    """The optimizer over the *trainable* params."""

    def decay_mask(params: Any) -> Any:
        return tree.map_with_path(
            lambda path, _: not any(re.search(p, path) for p in cfg.no_decay), params
        )

    parts = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm else []
    parts.append(
        optax.adamw(
            schedule(cfg, total_steps),
            b1=cfg.b1,
            b2=cfg.b2,
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            mask=decay_mask,
        )
    )
    return optax.chain(*parts)

"""The training step: state, shardings, and one `jax.jit` CAM contrastive step.

State is a plain dict `{"params", "opt_state", "step", "rng"}` with a parallel dict of
shardings. Parameters are float32 masters; the forward pass computes in `ModelConfig.dtype`.
Only trainable parameters (not matched by `optim.frozen`) get gradients and optimizer state.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from compass_jax import embedding, optim, sharding
from compass_jax.config import ModelConfig
from compass_jax.experiment import TrainConfig
from compass_jax.gradcache import gradcache_value_and_grad, tower_keys
from compass_jax.losses import ContrastiveBatch, LossSettings, cam_infonce_sharded

State = dict[str, Any]
BATCH_FIELDS = (
    "query_ids", "query_mask", "positive_ids", "positive_mask", "negative_ids", "negative_mask",
    "negative_valid", "label", "negative_label", "query_hash", "positive_hash", "negative_hash",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """Everything static about the step (hashable, so jitted steps are cached per spec)."""

    model: ModelConfig
    pooling: str
    loss: LossSettings
    optim: optim.OptimConfig
    total_steps: int
    gradcache_chunk: int | None
    loss_block: tuple[int, int]
    dropout: bool


def _place(x: np.ndarray, s: NamedSharding) -> jax.Array:
    """A global array from a host value every process holds (multi-host safe)."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, s, lambda index: x[index])


def state_shardings(abstract_state: State, mesh: Mesh, min_elements: int) -> State:
    replicated = NamedSharding(mesh, PartitionSpec())
    return {
        "params": sharding.param_shardings(
            abstract_state["params"], mesh, min_elements=min_elements
        ),
        "opt_state": sharding.param_shardings(
            abstract_state["opt_state"], mesh, min_elements=min_elements
        ),
        "step": replicated,
        "rng": replicated,
    }


def init_state(params: Any, spec: StepSpec, mesh: Mesh, *, seed: int, min_elements: int):
    """`(state, shardings)` from host params: params placed by the rules table, optimizer
    state created directly in its sharded layout."""
    optimizer = optim.make_optimizer(spec.optim, spec.total_steps)
    trainable = optim.split_trainable(spec.optim, params)[0]
    abstract = {
        "params": jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.float32), params),
        "opt_state": jax.eval_shape(optimizer.init, trainable),
        "step": jax.ShapeDtypeStruct((), jnp.int32),
        "rng": jax.ShapeDtypeStruct((2,), jnp.uint32),
    }
    shardings = state_shardings(abstract, mesh, min_elements)
    placed = jax.tree.map(
        lambda x, s: _place(np.asarray(x, np.float32), s), params, shardings["params"]
    )
    trainable_placed = optim.split_trainable(spec.optim, placed)[0]
    opt_state = jax.jit(optimizer.init, out_shardings=shardings["opt_state"])(trainable_placed)
    state = {
        "params": placed,
        "opt_state": opt_state,
        "step": _place(np.int32(0), shardings["step"]),
        "rng": _place(np.asarray(jax.random.key_data(jax.random.key(seed))), shardings["rng"]),
    }
    return state, shardings


def batch_shardings(mesh: Mesh) -> dict[str, NamedSharding]:
    return {name: sharding.batch_sharding(mesh) for name in BATCH_FIELDS}


def _contrastive_batch(embs: dict[str, jax.Array], batch: dict[str, jax.Array]) -> ContrastiveBatch:
    b, h = batch["negative_valid"].shape
    negatives = embs.get("negatives", jnp.zeros((b * h, embs["query"].shape[-1]), jnp.float32))
    return ContrastiveBatch(
        query=embs["query"],
        positive=embs["positive"],
        negatives=negatives.reshape(b, h, embs["query"].shape[-1]),
        negative_mask=batch["negative_valid"],
        label=batch["label"],
        negative_label=batch["negative_label"],
        query_hash=batch["query_hash"],
        positive_hash=batch["positive_hash"],
        negative_hash=batch["negative_hash"],
    )


def _towers(batch):
    towers = {
        "query": (batch["query_ids"], batch["query_mask"]),
        "positive": (batch["positive_ids"], batch["positive_mask"]),
    }
    if batch["negative_ids"].shape[0]:
        towers["negatives"] = (batch["negative_ids"], batch["negative_mask"])
    return towers


def loss_and_grads(spec: StepSpec, mesh: Mesh, trainable, frozen, batch, key):
    """`((loss, metrics), grads)` for the trainable params, by GradCache when configured."""
    shards = mesh.devices.size

    def embed_fn(p, ids, mask, k):
        params = optim.merge_trainable(p, frozen)
        return embedding.embed(spec.model, params, ids, mask, pooling=spec.pooling, dropout_key=k)

    def loss_fn(embs):
        cb = _contrastive_batch(embs, batch)
        return cam_infonce_sharded(cb, spec.loss, mesh, block=spec.loss_block)

    towers = _towers(batch)
    if spec.gradcache_chunk:
        return gradcache_value_and_grad(
            embed_fn, loss_fn, trainable, towers, key, chunk=spec.gradcache_chunk, shards=shards
        )

    def full_loss(p):
        keys = tower_keys(key, towers)
        return loss_fn({n: embed_fn(p, i, m, keys[n]) for n, (i, m) in towers.items()})

    return jax.value_and_grad(full_loss, has_aux=True)(trainable)


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def train_step(spec: StepSpec, mesh: Mesh, state: State, batch: dict) -> tuple[State, dict]:
    optimizer = optim.make_optimizer(spec.optim, spec.total_steps)
    trainable, frozen = optim.split_trainable(spec.optim, state["params"])
    rng = jax.random.wrap_key_data(state["rng"])
    key = jax.random.fold_in(rng, state["step"]) if spec.dropout else None
    (loss, metrics), grads = loss_and_grads(spec, mesh, trainable, frozen, batch, key)
    updates, opt_state = optimizer.update(grads, state["opt_state"], trainable)
    new_trainable = optax.apply_updates(trainable, updates)
    # A non-finite loss or gradient skips the update (params and moments unchanged) but not
    # the step, so the data stream and schedule move on; the skip is reported.
    finite = jnp.isfinite(loss) & _all_finite(grads)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_trainable = keep(new_trainable, trainable)
    opt_state = keep(opt_state, state["opt_state"])
    metrics = {
        **metrics,
        "grad_norm": optax.global_norm(grads),
        "param_norm": optax.global_norm(new_trainable),
        "update_norm": optax.global_norm(updates) * finite,
        "skipped": (~finite).astype(jnp.int32),
        "learning_rate": optim.schedule(spec.optim, spec.total_steps)(state["step"]),
    }
    new_state = {
        "params": optim.merge_trainable(new_trainable, frozen),
        "opt_state": opt_state,
        "step": state["step"] + 1,
        "rng": state["rng"],
    }
    return new_state, metrics


def make_train_step(spec: StepSpec, mesh: Mesh, shardings: State):
    """`step(state, batch) -> (state, metrics)`, jitted with explicit shardings; the state's
    buffers are donated (updated in place)."""
    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.jit(
        functools.partial(train_step, spec, mesh),
        in_shardings=(shardings, batch_shardings(mesh)),
        out_shardings=(shardings, replicated),
        donate_argnums=(0,),
    )


def spec_for(cfg: TrainConfig, model: ModelConfig, pooling: str, task: str) -> StepSpec:
    return StepSpec(
        model=model.replace(dtype=cfg.dtype),
        pooling=pooling,
        loss=cfg.loss_for(task),
        optim=cfg.optim,
        total_steps=cfg.steps,
        gradcache_chunk=cfg.gradcache_chunk,
        loss_block=tuple(cfg.loss_block),
        dropout=cfg.dropout,
    )

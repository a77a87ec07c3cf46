"""The training step: state, shardings, and one `jax.jit` CAM contrastive step.

State is a plain dict `{"params", "opt_state", "step", "rng"}` with a parallel dict of
shardings. Parameters are float32 masters; the forward pass computes in `ModelConfig.dtype`.
Only trainable parameters (not matched by `optim.frozen`) get gradients and optimizer state.
When those rules freeze exactly a trunk (embeddings and the lowest layers, `compass_jax.trunk`),
the step takes each tower's trunk states, computed once per text, and runs only the layers above.

`setup` builds what a run steps: the state on its mesh, its shardings and the per-task steps
compiled ahead of time (`TrainSetup`). The trainer and the benchmarks both start from it, so a
benchmark times the program training runs.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, Float, Int

from compass_jax import embedding, optim, sharding, tree, trunk
from compass_jax.config import ModelConfig
from compass_jax.data.batch import TrainBatch
from compass_jax.experiment import TrainConfig
from compass_jax.gradcache import gradcache_value_and_grad, row_unit, tower_keys
from compass_jax.losses import ContrastiveBatch, LossSettings, cam_infonce_sharded

State = dict[str, Any]


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
    # Speed knobs that leave the result unchanged up to rounding (see `TrainConfig`).
    cast_params: bool = False
    remat: str | None = None  # a `jax.checkpoint_policies` name, applied to the embedding
    compiler_options: tuple[tuple[str, Any], ...] = ()  # XLA options of this step's compile
    # Layers of a locked trunk (`compass_jax.trunk`): the step takes their states, not ids.
    trunk: int | None = None


def place(x: np.ndarray, s: NamedSharding) -> jax.Array:
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
        lambda x, s: place(np.asarray(x, np.float32), s), params, shardings["params"]
    )
    trainable_placed = optim.split_trainable(spec.optim, placed)[0]
    opt_state = jax.jit(optimizer.init, out_shardings=shardings["opt_state"])(trainable_placed)
    state = {
        "params": placed,
        "opt_state": opt_state,
        "step": place(np.int32(0), shardings["step"]),
        "rng": place(np.asarray(jax.random.key_data(jax.random.key(seed))), shardings["rng"]),
    }
    return state, shardings


def batch_shardings(mesh: Mesh) -> TrainBatch:
    return TrainBatch.filled(sharding.batch_sharding(mesh))


def by_example(
    segments: Float[Array, "r s e"], texts: Int[Array, "r s"], count: int
) -> Float[Array, "n e"]:
    """A tower's per-segment embeddings gathered into text order (`count` texts; a text in no
    row, an empty hard-negative slot, gets zeros)."""
    r, s, e = segments.shape
    flat_texts = texts.reshape(r * s)
    # where each text sits in the flat segments (r * s: nowhere); -1 entries are dropped.
    where = jnp.full((count,), r * s, jnp.int32).at[jnp.where(flat_texts >= 0, flat_texts, count)]
    where = where.set(jnp.arange(r * s, dtype=jnp.int32), mode="drop")
    return segments.reshape(r * s, e).at[where].get(mode="fill", fill_value=0)


def contrastive_batch(embs: dict[str, Float[Array, "n d"]], batch: TrainBatch) -> ContrastiveBatch:
    """The loss's view of a batch: tower embeddings in example order (`query`, `positive` `[b,
    d]`, `negatives` `[b * g, d]`) with the batch's CAM metadata."""
    b, g = batch.negative_valid.shape
    d = embs["query"].shape[-1]
    negatives = embs.get("negatives", jnp.zeros((b * g, d), jnp.float32))
    return ContrastiveBatch(
        query=embs["query"],
        positive=embs["positive"],
        negatives=negatives.reshape(b, g, d),
        negative_valid=batch.negative_valid,
        label=batch.label,
        negative_label=batch.negative_label,
        query_hash=batch.query_hash,
        positive_hash=batch.positive_hash,
        negative_hash=batch.negative_hash,
    )


def _towers(batch: TrainBatch) -> dict[str, tuple]:
    """The step's towers, each `(ids [r, l], segment_ids [r, l], texts [r, s])`."""
    towers = {"query": batch.tower("query"), "positive": batch.tower("positive")}
    if batch.num_negatives:
        towers["negatives"] = batch.tower("negative")
    return towers


def cast_kernels(params, dtype: str):
    """The matmul kernels in the compute `dtype` (the cast a Dense layer does at every use, done
    once); embedding tables, norms and biases stay float32."""
    cast = lambda path, x: x.astype(dtype) if path.endswith(".kernel") else x
    return tree.map_with_path(cast, params)


def loss_and_grads(
    spec: StepSpec, mesh: Mesh, trainable, frozen, batch: TrainBatch, key, hidden=None
):
    """`((loss, metrics), grads)` for the trainable params (float32 gradients), by GradCache
    when configured. With a locked trunk, `hidden` holds each tower's trunk states
    (`TrainSetup.trunk_states`) and only the layers above it run."""
    shards = mesh.devices.size

    def embed_fn(p, ids, segment_ids, texts, k):
        params = optim.merge_trainable(p, frozen)
        return embedding.embed_segments(
            spec.model, params, ids, segment_ids, segments=texts.shape[1], pooling=spec.pooling,
            dropout_key=k, trunk=spec.trunk or 0,
        )  # fmt: skip

    if spec.remat:
        embed_fn = jax.checkpoint(embed_fn, policy=getattr(jax.checkpoint_policies, spec.remat))
    if spec.cast_params:
        # GradCache re-uses the copy in every chunk of both passes; its cotangent is the
        # master's gradient (the cast is the identity on values).
        trainable = cast_kernels(trainable, spec.model.dtype)

    towers = _towers(batch)
    b, g = batch.negative_valid.shape
    counts = {"query": b, "positive": b, "negatives": b * g}

    def loss_fn(segment_embs):
        embs = {n: by_example(e, towers[n][2], counts[n]) for n, e in segment_embs.items()}
        return cam_infonce_sharded(contrastive_batch(embs, batch), spec.loss, mesh,
                                   block=spec.loss_block)  # fmt: skip

    if spec.trunk:
        towers = {n: (hidden[n], *rest) for n, (_, *rest) in towers.items()}
    if spec.gradcache_chunk:
        return gradcache_value_and_grad(
            embed_fn, loss_fn, trainable, towers, key, chunk=spec.gradcache_chunk, shards=shards
        )

    def full_loss(p):
        keys = tower_keys(key, towers)
        return loss_fn({n: embed_fn(p, *t, keys[n]) for n, t in towers.items()})

    out, grads = jax.value_and_grad(full_loss, has_aux=True)(trainable)
    return out, jax.tree.map(lambda g: g.astype(jnp.float32), grads)


def _all_finite(values) -> jax.Array:
    return jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(values)]))


def train_step(
    spec: StepSpec, mesh: Mesh, state: State, batch: TrainBatch, hidden=None
) -> tuple[State, dict]:
    optimizer = optim.make_optimizer(spec.optim, spec.total_steps)
    trainable, frozen = optim.split_trainable(spec.optim, state["params"])
    rng = jax.random.wrap_key_data(state["rng"])
    key = jax.random.fold_in(rng, state["step"]) if spec.dropout else None
    (loss, metrics), grads = loss_and_grads(spec, mesh, trainable, frozen, batch, key, hidden)
    updates, opt_state = optimizer.update(grads, state["opt_state"], trainable)
    new_trainable = optax.apply_updates(trainable, updates)
    # A non-finite loss, gradient, update or new param (an overflowing learning rate) skips
    # the update (params and moments unchanged) but not the step, so the data stream and
    # schedule move on; the skip is reported, and the trainer stops a run that mostly skips.
    finite = jnp.isfinite(loss) & _all_finite((grads, updates, new_trainable, opt_state))
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_trainable = keep(new_trainable, trainable)
    opt_state = keep(opt_state, state["opt_state"])
    metrics = {
        **metrics,
        "grad_norm": optax.global_norm(grads),
        "param_norm": optax.global_norm(new_trainable),
        "update_norm": jnp.where(finite, optax.global_norm(updates), 0.0),
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
    hidden = (sharding.batch_sharding(mesh),) if spec.trunk else ()
    return jax.jit(
        functools.partial(train_step, spec, mesh),
        in_shardings=(shardings, batch_shardings(mesh), *hidden),
        out_shardings=(shardings, replicated),
        donate_argnums=(0,),
    )


def spec_for(cfg: TrainConfig, model: ModelConfig, pooling: str, task: str) -> StepSpec:
    return StepSpec(
        model=model.replace(dtype=cfg.dtype, attention_impl=cfg.attention),
        pooling=pooling,
        loss=cfg.loss_for(task),
        optim=cfg.optim,
        total_steps=cfg.steps,
        gradcache_chunk=cfg.gradcache_chunk,
        loss_block=tuple(cfg.loss_block),
        dropout=cfg.dropout,
        cast_params=cfg.cast_params,
        remat=cfg.remat,
        compiler_options=tuple(sorted(cfg.xla_options.items())),
        trunk=trunk.depth(model, cfg.optim),
    )


def _shapes(batch: TrainBatch) -> tuple:
    return tuple((x.shape, str(x.dtype)) for x in jax.tree.leaves(batch))


@dataclasses.dataclass
class TrainSetup:
    """A train state on its mesh and its steps, compiled ahead of time once per (spec, batch
    shapes): tasks with equal loss settings share one program."""

    mesh: Mesh
    specs: dict[str, StepSpec]  # per task
    state: State
    shardings: State
    compiled: dict[tuple, Any] = dataclasses.field(default_factory=dict)
    trunk_cache: trunk.Cache = dataclasses.field(default_factory=lambda: trunk.Cache(2**31))
    locked: trunk.Trunk | None = None  # built from the state's frozen params at first use

    def trunk_states(self, spec: StepSpec, host: TrainBatch) -> dict[str, jax.Array]:
        """The locked trunk's states of each tower of the global batch `host` (host arrays,
        which every process holds whole), as global arrays laid out like the batch. Each
        process computes the states of the rows its own devices hold only."""
        if self.locked is None:
            frozen = trunk.host_params(optim.split_trainable(spec.optim, self.state["params"])[1])
            self.locked = trunk.Trunk(spec.model, spec.trunk, frozen, self.trunk_cache)
        rows = sharding.batch_sharding(self.mesh)
        towers = {
            n: (np.asarray(ids), np.asarray(seg)) for n, (ids, seg, _) in _towers(host).items()
        }
        mine = {n: sharding.addressable_rows(rows, ids.shape) for n, (ids, _) in towers.items()}
        hidden = self.locked.states(
            {n: (ids[mine[n]], seg[mine[n]]) for n, (ids, seg) in towers.items()}
        )
        out = {}
        for name, (ids, _) in towers.items():
            if len(mine[name]) == len(ids):
                out[name] = hidden[name]
                continue
            out[name] = np.zeros((*ids.shape, spec.model.hidden_size), hidden[name].dtype)
            out[name][mine[name]] = hidden[name]  # other processes' rows: zeros `place` never reads
        return {name: place(value, rows) for name, value in out.items()}

    def compile(self, spec: StepSpec, batch: TrainBatch, hidden=None) -> Any:
        """The compiled step of `spec` for `batch`'s shapes (arrays or ShapeDtypeStructs).

        Across processes every process compiles before any steps: one still compiling would
        leave the others waiting in their first collective past the CPU collectives' (gloo)
        connection timeout."""
        key = (spec, _shapes(batch), _shapes(hidden))
        if key not in self.compiled:
            step = make_train_step(spec, self.mesh, self.shardings)
            lowered = step.lower(self.state, batch, *([hidden] if spec.trunk else []))
            self.compiled[key] = lowered.compile(dict(spec.compiler_options) or None)
            if jax.process_count() > 1:
                multihost_utils.sync_global_devices("compass_jax: train step compiled")
        return self.compiled[key]

    def run(self, spec: StepSpec, batch: TrainBatch, host=None) -> dict[str, jax.Array]:
        """One step of `spec` (the state's buffers are donated and replaced); its metrics.

        A locked trunk's states come from the batch's host arrays `host` (every process holds
        the whole global batch; default: fetched from `batch`)."""
        if not spec.trunk:
            self.state, metrics = self.compile(spec, batch)(self.state, batch)
            return metrics
        hidden = self.trunk_states(spec, jax.device_get(batch) if host is None else host)
        self.state, metrics = self.compile(spec, batch, hidden)(self.state, batch, hidden)
        cache = self.trunk_cache
        return {**metrics, "trunk_layers": spec.trunk, "trunk_cache_hits": cache.hits,
                "trunk_cache_misses": cache.misses}  # fmt: skip

    def step(self, task: str, batch: TrainBatch, host=None) -> dict[str, jax.Array]:
        return self.run(self.specs[task], batch, host)

    def row_multiple(self, task: str) -> int:
        """What a packed tower's row count of `task` is rounded up to (`gradcache.row_unit`)."""
        return row_unit(self.specs[task].gradcache_chunk, self.mesh.devices.size)


def setup(
    cfg: TrainConfig,
    model: ModelConfig,
    params: Any,
    *,
    pooling: str,
    tasks: Sequence[str] = ("default",),
    mesh: Mesh | None = None,
) -> TrainSetup:
    """The state of `cfg` from host `params` (placed by the sharding rules, optimizer state
    created in its sharded layout) on `mesh` (default: `cfg.mesh`), with one step spec per task."""
    mesh = mesh or sharding.make_mesh(cfg.mesh.data, cfg.mesh.fsdp)
    specs = {task: spec_for(cfg, model, pooling, task) for task in tasks}
    state, shardings = init_state(
        params, specs[tasks[0]], mesh, seed=cfg.seed, min_elements=cfg.mesh.min_sharded_elements
    )
    cache = trunk.shared_cache(cfg.trunk_cache_mb * 2**20)
    return TrainSetup(mesh, specs, state, shardings, trunk_cache=cache)

"""The training loop: data -> global batches -> jitted step -> logs and checkpoints.

A run in a workdir resumes from the workdir's latest checkpoint by itself: params, optimizer
state, step, RNG and the data reader's position are restored, so an interrupted run continues
exactly where the uninterrupted one would be.
"""

from __future__ import annotations

import logging
import time

import jax
from tqdm.auto import tqdm

from compass_jax import checkpoint, sharding, train
from compass_jax.configio import to_json
from compass_jax.data.batch import TrainBatch
from compass_jax.data.mixture import open_reader
from compass_jax.data.pairs import tokenize_batch
from compass_jax.experiment import TrainConfig
from compass_jax.interop.st_package import read_settings
from compass_jax.interop.tokenizer import load_tokenizer
from compass_jax.metrics_log import MetricsLog
from compass_jax.resolve import load_model

log = logging.getLogger(__name__)


def _global_batch(local: TrainBatch, mesh, processes: int) -> TrainBatch:
    """Each process contributes its rows; each field becomes one array sharded over the mesh."""
    batch_sharding = sharding.batch_sharding(mesh)
    return jax.tree.map(
        lambda value: jax.make_array_from_process_local_data(
            batch_sharding, value, (value.shape[0] * processes, *value.shape[1:])
        ),
        local,
    )


def _scalars(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(metrics).items()}


def run(cfg: TrainConfig, workdir: str, *, progress: bool = True) -> list[dict[str, float]]:
    """Train `cfg` in `workdir` (resuming if it holds checkpoints); returns the logged metrics
    of this invocation."""
    model_cfg, params, model_dir = load_model(cfg.model)
    tokenizer = load_tokenizer(model_dir)
    settings = read_settings(model_dir, model_cfg.arch, default_max_length=512)
    processes, index = jax.process_count(), jax.process_index()
    reader = open_reader(
        cfg.data.path,
        batch_size=cfg.batch_size,
        seed=cfg.data.seed,
        task_weights=cfg.data.task_weights,
        class_density=cfg.data.class_density,
        process_index=index,
        process_count=processes,
    )
    training = train.setup(cfg, model_cfg, params, pooling=settings.pooling, tasks=reader.tasks)
    del params

    ckpt = checkpoint.Checkpointer(workdir, keep=cfg.keep_checkpoints)
    start = ckpt.latest_step() or 0
    if start:
        abstract = jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
            training.state,
            training.shardings,
        )
        training.state, data_state = ckpt.restore(start, abstract)
        reader.restore(data_state)
        log.info("resumed %s at step %d", workdir, start)
    if index == 0:
        model = training.specs[reader.tasks[0]].model
        checkpoint.write_run_info(workdir, to_json(cfg), str(model_dir), model)
    metrics_log = MetricsLog(workdir, resume_step=start, enabled=index == 0)

    history = []
    bar = tqdm(total=cfg.steps, initial=start, unit="step", disable=not progress or index != 0)
    tic, examples = time.perf_counter(), 0
    prefix = {"query": settings.prompt_text("query"), "document": settings.prompt_text("document")}
    for step in range(start, cfg.steps):
        task, rows = reader.next_batch()
        local = tokenize_batch(
            rows,
            tokenizer,
            query_prefix=prefix["query"],
            document_prefix=prefix["document"],
            query_length=cfg.data.query_length,
            document_length=cfg.data.document_length,
            num_negatives=cfg.data.num_negatives,
        )
        metrics = training.step(task, _global_batch(local, training.mesh, processes))
        examples += cfg.batch_size
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            values = _scalars(metrics)
            elapsed = time.perf_counter() - tic
            values["examples_per_second"] = examples / max(elapsed, 1e-9)
            values["task"] = task
            history.append({"step": done, **values})
            metrics_log.write(done, values)
            bar.set_postfix(
                loss=f"{values['loss']:.4f}", ex_s=f"{values['examples_per_second']:.0f}"
            )
            tic, examples = time.perf_counter(), 0
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            ckpt.save(done, training.state, reader.state())
        bar.update(1)
    bar.close()
    ckpt.close()
    metrics_log.close()
    return history

"""The training loop: data -> global batches -> jitted step -> logs and checkpoints.

A run in a workdir resumes from the workdir's latest checkpoint by itself: params, optimizer
state, step, RNG and the data reader's position are restored, so an interrupted run continues
exactly where the uninterrupted one would be. A workdir refuses a config that changes what the
run computes (`experiment.RESUMABLE_FIELDS` lists what may change), and a run whose steps are
mostly skipped (non-finite loss, gradient or update) stops with an error rather than saving
checkpoints that learned nothing.
"""

from __future__ import annotations

import logging
import os
import time

import jax
from tqdm.auto import tqdm

from compass_jax import checkpoint, jsonio, sharding, train
from compass_jax.configio import ConfigError, to_json
from compass_jax.data.batch import TrainBatch
from compass_jax.data.mixture import open_reader
from compass_jax.data.pairs import tokenize_batch
from compass_jax.experiment import RESUMABLE_FIELDS, TrainConfig, changed_fields
from compass_jax.interop.st_package import read_settings
from compass_jax.interop.tokenizer import load_tokenizer
from compass_jax.metrics_log import MetricsLog
from compass_jax.resolve import load_model

log = logging.getLogger(__name__)


def _global_batch(host: TrainBatch, mesh) -> TrainBatch:
    """The whole global batch, which every process holds, as arrays sharded over the mesh (a
    packed tower's rows hold texts of any process's examples)."""
    return jax.tree.map(lambda x: train.place(x, sharding.batch_sharding(mesh)), host)


def _scalars(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(metrics).items()}


# A run stops once more than this share of the steps it ran were skipped, judged from
# `MIN_STEPS_JUDGED` steps on (a few isolated bad batches are survivable; a run that mostly
# skips learns nothing and would only keep saving its last good weights).
MAX_SKIPPED_SHARE = 0.5
MIN_STEPS_JUDGED = 10


class TrainingError(ValueError):
    """A run that cannot go on; the message names the workdir and what to change."""


def _comparable(config: dict, model_dir: str) -> dict:
    """A recorded config with the model as its directory and the data path absolute, so the
    same run started from another folder, or with the model named another way, compares equal."""
    data = dict(config.get("data") or {})
    if data.get("path"):
        data["path"] = os.path.abspath(data["path"])
    return {**config, "model": os.path.abspath(model_dir), "data": data}


def _check_resume(workdir: str, cfg: TrainConfig, model_dir: str) -> None:
    """Refuse to resume `workdir` with a config that changes what its run computes."""
    path = os.path.join(workdir, checkpoint.RUN_FILE)
    if not os.path.isfile(path):
        return
    saved = jsonio.read_json(path)
    before = saved.get("config") or {}
    before = _comparable(before, saved.get("model_dir") or before.get("model", ""))
    changed = changed_fields(before, _comparable(to_json(cfg), model_dir))
    if changed:
        listing = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
        raise ConfigError(
            f"{path}: the config changes what this workdir's run computes ({listing}); a "
            "resumed run may change only how long it runs, logs, checkpoints and is laid out "
            f"({', '.join(RESUMABLE_FIELDS)}). Start fresh with another --workdir, or delete it"
        )


def _check_skips(workdir: str, skipped: int, ran: int, final: bool) -> None:
    if (ran >= MIN_STEPS_JUDGED or final) and skipped > MAX_SKIPPED_SHARE * ran:
        raise TrainingError(
            f"{workdir}: {skipped} of the {ran} steps run were skipped (non-finite loss, "
            "gradient or update), so the run stops; its checkpoints keep the last finite "
            "weights. Lower optim.learning_rate, raise the loss temperature, or train in float32"
        )


def run(cfg: TrainConfig, workdir: str, *, progress: bool = True) -> list[dict[str, float]]:
    """Train `cfg` in `workdir` (resuming if it holds checkpoints); returns the logged metrics
    of this invocation."""
    model_cfg, params, model_dir = load_model(cfg.model)
    processes, index = jax.process_count(), jax.process_index()
    ckpt = checkpoint.Checkpointer(workdir, keep=cfg.keep_checkpoints)
    metrics_log = None
    bar = tqdm(total=cfg.steps, unit="step", disable=not progress or index != 0)
    try:  # the checkpointer is closed whatever happens (its threads, its event loop)
        start = ckpt.latest_step() or 0
        if start:
            _check_resume(workdir, cfg, model_dir)
        tokenizer = load_tokenizer(model_dir)
        settings = read_settings(model_dir, model_cfg.arch, default_max_length=512)
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
        if start:
            abstract = jax.tree.map(
                lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                training.state,
                training.shardings,
            )
            training.state, data_state = ckpt.restore(start, abstract)
            reader.restore(data_state)
            log.info("resumed %s at step %d", workdir, start)
        if depth := training.specs[reader.tasks[0]].trunk:
            log.info("locked trunk: embeddings and layers 0..%d, run once per text", depth - 1)
        if index == 0:
            model = training.specs[reader.tasks[0]].model
            checkpoint.write_run_info(workdir, to_json(cfg), str(model_dir), model)
        metrics_log = MetricsLog(workdir, resume_step=start, enabled=index == 0)

        history = []
        bar.update(start)
        tic, examples, skipped = time.perf_counter(), 0, 0
        prefix = {role: settings.prompt_text(role) for role in ("query", "document")}
        for step in range(start, cfg.steps):
            task, rows = reader.next_global_batch()
            host = tokenize_batch(
                rows,
                tokenizer,
                query_prefix=prefix["query"],
                document_prefix=prefix["document"],
                query_length=cfg.data.query_length,
                document_length=cfg.data.document_length,
                num_negatives=cfg.data.num_negatives,
                pack=cfg.pack,
                row_multiple=training.row_multiple(task),
            )
            metrics = training.step(task, _global_batch(host, training.mesh), host)
            skipped = skipped + metrics["skipped"]  # on device: no sync per step
            examples += cfg.batch_size
            done = step + 1
            logs = done % cfg.log_every == 0 or done == cfg.steps
            saves = done % cfg.checkpoint_every == 0 or done == cfg.steps
            if logs:
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
            if logs or saves:  # judged before a checkpoint is saved
                _check_skips(workdir, int(skipped), done - start, final=done == cfg.steps)
            if saves:
                ckpt.save(done, training.state, reader.state())
            bar.update(1)
    finally:
        bar.close()
        ckpt.close()
        if metrics_log is not None:
            metrics_log.close()
    return history

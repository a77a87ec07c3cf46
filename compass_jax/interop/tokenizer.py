"""The tokenizer of a model directory, loaded offline through `transformers`."""

from __future__ import annotations

import os

_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "sentencepiece.bpe.model",
)


def load_tokenizer(model_dir: str | os.PathLike):
    """A fast tokenizer from `model_dir` (never from the hub, never with remote code)."""
    from transformers import AutoTokenizer

    model_dir = os.fspath(model_dir)
    if not any(os.path.isfile(os.path.join(model_dir, f)) for f in _TOKENIZER_FILES):
        raise FileNotFoundError(f"{model_dir}: no tokenizer files (looked for {_TOKENIZER_FILES})")
    try:
        return AutoTokenizer.from_pretrained(model_dir, local_files_only=True, use_fast=True)
    except Exception as e:  # transformers and tokenizers raise anything on a damaged file
        message = str(e).splitlines()[0] if str(e) else ""
        raise ValueError(
            f"{model_dir}: cannot load the tokenizer ({type(e).__name__}: {message[:300]})"
        ) from e

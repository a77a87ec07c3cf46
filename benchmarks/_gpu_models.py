"""Random models saved as complete HF + sentence-transformers directories, made on the machine
that runs `gpu_suite.py` (nothing large travels to it): a word-level tokenizer over synthetic
words `w0 w1 ...`, synthetic texts in those words, and `save_hf` of random params (bf16 or the
FP8 export). Not a benchmark itself; `gpu_suite.py`'s phases import it.
"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np

SPECIALS = ("[PAD]", "[UNK]")


def write_tokenizer(directory: str | pathlib.Path, words: int, max_length: int) -> pathlib.Path:
    """A fast word-level tokenizer over `words` synthetic words (ids `len(SPECIALS)` onwards),
    saved as `transformers` saves one; both compass-jax and sentence-transformers load it."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIALS)}
    vocab |= {f"w{i}": i + len(SPECIALS) for i in range(words)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", model_max_length=max_length
    )
    tokenizer.save_pretrained(str(directory))
    return pathlib.Path(directory)


def texts(n: int, words: int, lengths: tuple[int, int], seed: int = 0) -> list[str]:
    """`n` texts of `lengths[0]..lengths[1]` synthetic words (one token each)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(lengths[0], lengths[1] + 1, n)
    return [" ".join(f"w{i}" for i in rng.integers(0, words, size)) for size in sizes]


def random_params(cfg, seed: int = 0) -> dict[str, Any]:
    """Float32 host params of a random `cfg` (initialised on the device: fast at any size)."""
    import jax

    from compass_jax import models

    params = jax.jit(models.init, static_argnums=0)(cfg, jax.random.key(seed))
    return jax.tree.map(np.asarray, params)


def export(cfg, params, directory, tokenizer_dir, *, fp8: bool = False) -> pathlib.Path:
    """`save_hf` of `params` (bf16, or bf16 with FP8 block linears), compass-jax's export path."""
    from compass_jax.interop.save import save_hf

    return save_hf(cfg, params, directory, tokenizer_from=tokenizer_dir, fp8=fp8)

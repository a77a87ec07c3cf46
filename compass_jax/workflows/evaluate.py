"""Evaluating a model on a suite (`compass-jax eval`): per-task, per-language scores written as
`results.json` and `results.md`, corpus embeddings cached by model and text."""

from __future__ import annotations

import os
import pathlib
from typing import Any

from compass_jax import jsonio
from compass_jax.atomic import atomic_path
from compass_jax.encoder import Encoder
from compass_jax.eval import evaluate, load_suite, to_markdown
from compass_jax.resolve import cache_dir


def evaluate_model(
    model: str | os.PathLike | None,
    suite: str,
    out_dir: str | os.PathLike,
    *,
    dtype: str = "float32",
    cache: bool = True,
) -> dict[str, Any]:
    """`model` (any argument `compass_jax.resolve` takes) on `suite` (a built-in name or a
    suite file); the results, also written to `out_dir`. With `cache`, embeddings are reused
    from the user cache (`$COMPASS_JAX_CACHE/embeddings`).

    Example:
        evaluate_model("runs/e5@400", "sample", "out/eval")["average"]
    """
    loaded = load_suite(suite)
    encoder = Encoder.load(model, dtype=dtype)
    results = evaluate(
        encoder, loaded, cache_dir=str(cache_dir() / "embeddings") if cache else None
    )
    os.makedirs(out_dir, exist_ok=True)
    jsonio.write_json(os.path.join(out_dir, "results.json"), results, indent=2)
    with atomic_path(os.path.join(out_dir, "results.md")) as tmp:
        pathlib.Path(tmp).write_text(to_markdown(results), encoding="utf-8")
    return results

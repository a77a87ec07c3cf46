"""Evaluating a model on a suite (`compass-jax eval`): per-task, per-language scores written as
`results.json` and `results.md`, corpus embeddings cached by model and text. The results name
the model as it was given and what it was read from (`provenance`: for a training run, its
workdir and step), never only the directory the resolver exported it to."""

from __future__ import annotations

import os
import pathlib
from typing import Any

from compass_jax import jsonio
from compass_jax.atomic import atomic_path, check_writable
from compass_jax.encoder import Encoder
from compass_jax.eval import evaluate, load_suite, to_markdown
from compass_jax.resolve import cache_dir, resolve


def evaluate_model(
    model: str | os.PathLike | None,
    suite: str,
    out_dir: str | os.PathLike,
    *,
    dtype: str = "float32",
    cache: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """`model` (any argument `compass_jax.resolve` takes) on `suite` (a built-in name or a
    suite file); the results, also written to `out_dir`. With `cache`, embeddings are reused
    from the user cache (`$COMPASS_JAX_CACHE/embeddings`).

    Example:
        evaluate_model("runs/e5@400", "sample", "out/eval")["average"]
    """
    check_writable(out_dir, directory=True)
    loaded = load_suite(suite)
    resolved = resolve(model)
    encoder = Encoder.load(resolved.path, dtype=dtype)
    results = evaluate(
        encoder,
        loaded,
        cache_dir=str(cache_dir() / "embeddings") if cache else None,
        progress=progress,
    )
    results = {**results, "model": resolved.label, "provenance": resolved.provenance()}
    os.makedirs(out_dir, exist_ok=True)
    jsonio.write_json(os.path.join(out_dir, "results.json"), results, indent=2)
    with atomic_path(os.path.join(out_dir, "results.md")) as tmp:
        pathlib.Path(tmp).write_text(markdown(results), encoding="utf-8")
    return results


def markdown(results: dict[str, Any]) -> str:
    """`results.md`: the tables of `eval.to_markdown`, with where the model came from."""
    title, _, rest = to_markdown(results).partition("\n")
    found = results.get("provenance") or {}
    line = f"Model `{found.get('argument', results['model'])}`: `{found.get('path', '')}`"
    if "workdir" in found:
        line += f" (training workdir `{found['workdir']}`, step {found['step']})"
    return f"{title}\n\n{line}\n{rest}"

"""An export with its FP8 quality gate: `save_hf` writes what it is given, so the FP8 report
(`compass_jax.fp8_quality`, which runs the encoder) is computed here first, and a report below
the gate stops the export before anything is written.

Multi-host: call these on every process. The params are gathered to host memory on every
process, because each process computes the report itself (the same numbers everywhere, so all
processes pass or fail the gate together); only process 0 writes.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from compass_jax.atomic import check_writable
from compass_jax.config import ModelConfig
from compass_jax.interop.load import load_hf
from compass_jax.interop.save import export_dtype, export_settings, host_params, save_hf
from compass_jax.interop.tokenizer import load_tokenizer
from compass_jax.resolve import resolve


def export_params(
    cfg: ModelConfig,
    params: Mapping[str, Any],
    out_dir: str | os.PathLike,
    *,
    tokenizer_from: str | os.PathLike,
    dtype: str = "bfloat16",
    fp8: bool = False,
    min_cosine: float | None = 0.99,
    calibration: Sequence[dict] | None = None,
    eval_fn: Callable | None = None,
    progress: bool = False,
    **save_kwargs: Any,
) -> pathlib.Path | None:
    """`save_hf(cfg, params, out_dir, ...)`, and for an FP8 export its quality report first.

    With `fp8`, the report compares FP8 with `dtype` embeddings of a calibration set
    (`calibration`, default the bundled sample; `eval_fn(encode) -> {metric: value}` adds metric
    deltas), and the export fails with `QualityError`, nothing written, when a language's mean
    cosine falls below `min_cosine` (None: no gate); `progress` shows its embedding passes.
    Other keyword arguments go to `save_hf`.

    Example:
        cfg, params, source = load_model("multilingual-e5-small")
        export_params(cfg, params, "out/e5-fp8", tokenizer_from=source, fp8=True)
    """
    kwargs = dict(tokenizer_from=tokenizer_from, **save_kwargs)
    if not fp8:
        return save_hf(cfg, params, out_dir, dtype=dtype, **kwargs)
    from compass_jax import fp8_quality  # runs the encoder: loaded only for FP8 exports

    dtype = export_dtype(dtype, fp8)
    out = pathlib.Path(out_dir).absolute()
    if out.exists() and not save_kwargs.get("overwrite"):
        raise FileExistsError(f"{out}: already exists (pass overwrite / --overwrite to replace)")
    names = ("prompts", "pooling", "normalize", "max_seq_length")
    settings = export_settings(
        cfg, tokenizer_from, **{k: save_kwargs[k] for k in names if k in save_kwargs}
    )
    params = host_params(params)
    report = fp8_quality.quality_report(
        cfg, params, load_tokenizer(tokenizer_from), settings,
        dtype=dtype, records=calibration, eval_fn=eval_fn, progress=progress,
    )  # fmt: skip
    report["min_cosine"] = min_cosine
    if min_cosine is not None:
        fp8_quality.check(report, min_cosine)
    return save_hf(cfg, params, out, dtype=dtype, fp8=True, fp8_report=report, **kwargs)


def export_model(
    model: str | os.PathLike, out_dir: str | os.PathLike, **kwargs: Any
) -> pathlib.Path | None:
    """`export_params` for any model argument `compass_jax.resolve` takes (a HF directory, a
    bundled name, a hub id, a training workdir or `workdir@step`); the card names `model` (a
    checkpoint with its step) and `export_info.json` records what it was read from
    (`source_model`: for a training run, its workdir and step)."""
    check_writable(out_dir, directory=True)
    resolved = resolve(model)
    cfg, params = load_hf(resolved.path)
    kwargs.setdefault("model_name", resolved.label)
    kwargs.setdefault("provenance", resolved.provenance())
    return export_params(cfg, params, out_dir, tokenizer_from=resolved.path, **kwargs)

"""How much FP8 serving changes the embeddings: the report an FP8 export is judged by.

The FP8 side is simulated in JAX as vLLM runs it: block linears use the exported E4M3 weights
(dequantised exactly as stored) and the input of each of those matmuls is quantised per token to
E4M3 on the fly (`simulate_w8a8`). The reference is the same model with the weights rounded to
the export dtype (bf16), computed in that dtype. Both embed a calibration set (by default the
bundled multilingual sample: shopper queries with the query prompt, product titles with the
document prompt), and the report gives, per language, the cosine between the two embeddings of
each text (mean, 1st percentile, minimum), query -> title top-1 retrieval under both, the
relative Frobenius error of every quantised weight, and the deltas of an optional eval callable.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import ml_dtypes
import numpy as np

from compass_jax import jsonio, tree
from compass_jax.assets import load_sample
from compass_jax.config import ModelConfig
from compass_jax.encoder import Encoder
from compass_jax.interop import fp8
from compass_jax.interop.st_package import EmbedderSettings

# `encode(texts, prompt_name_or_None) -> [n, d]`, what an eval callable receives.
EncodeFn = Callable[..., np.ndarray]


class QualityError(ValueError):
    """FP8 embeddings drift too far from the reference; the message names the language."""


def load_calibration(path: str | os.PathLike | None = None) -> list[dict]:
    """Records with `lang` and `query` and/or `title` (or `text`); default: the bundled sample."""
    if path is None:
        return load_sample()
    records = []
    for number, record in jsonio.iter_jsonl(path):
        if not any(k in record for k in ("query", "title", "text")):
            raise ValueError(f"{os.fspath(path)}:{number}: need a 'query', 'title' or 'text' field")
        records.append(record)
    if not records:
        raise ValueError(f"{os.fspath(path)}: no calibration records")
    return records


def _stats(cosines: np.ndarray) -> dict[str, float]:
    return {
        "n": int(cosines.size),
        "mean": float(cosines.mean()),
        "p1": float(np.percentile(cosines, 1)),
        "min": float(cosines.min()),
    }


def quality_report(
    cfg: ModelConfig,
    params: Mapping[str, Any],
    tokenizer: Any,
    settings: EmbedderSettings,
    *,
    dtype: str = "bfloat16",
    records: Sequence[dict] | None = None,
    eval_fn: Callable[[EncodeFn], Mapping[str, float]] | None = None,
    batch_size: int = 128,
    progress: bool = False,
) -> dict[str, Any]:
    """FP8 vs `dtype` embeddings of `records` for float32 host `params` (see the module doc);
    `progress`: a bar for each side's embedding pass."""
    records = list(records) if records is not None else load_calibration()
    flat = {p: np.asarray(v, np.float32) for p, v in tree.flatten(params).items()}
    rounded = {p: _round(v, dtype) for p, v in flat.items()}
    quantized, weights, fp8_flat = set(), {}, dict(rounded)
    for path, kernel in flat.items():
        if fp8.is_block_linear(cfg.arch, path, attention_bias=cfg.attention_bias):
            q, scale = fp8.quantize_weight(kernel.T)
            weights[path] = fp8.relative_error(kernel.T, q, scale)
            fp8_flat[path] = fp8.dequantize_weight(q, scale).T
            quantized.add(path)
    compute = cfg.replace(dtype=dtype)
    settings = dataclasses.replace(settings, default_prompt_name=None)  # prompts are explicit
    reference = Encoder(compute, jax.device_put(tree.unflatten(rounded)), tokenizer, settings)
    simulated = Encoder(
        compute, jax.device_put(tree.unflatten(fp8_flat)), tokenizer, settings,
        fp8=frozenset(quantized),
    )  # fmt: skip
    sides = {"reference": reference, "fp8": simulated}
    emb = {k: _embed_records(e, records, batch_size, progress) for k, e in sides.items()}

    langs = sorted({r.get("lang", "all") for r in records})
    per_lang, retrieval = {}, {}
    all_cos = []
    for lang in langs:
        cos = []
        rows = [i for i, r in enumerate(records) if r.get("lang", "all") == lang]
        for field in ("query", "document"):
            a, b = emb["reference"][field][rows], emb["fp8"][field][rows]
            keep = ~np.isnan(a[:, 0])
            cos.append(np.sum(a[keep] * b[keep], axis=1) / _norms(a[keep], b[keep]))
        cos = np.concatenate(cos)
        all_cos.append(cos)
        per_lang[lang] = _stats(cos)
        retrieval[lang] = _retrieval(emb, rows)
    report: dict[str, Any] = {
        "compute_dtype": dtype,
        "simulation": "E4M3 per-channel weights + dynamic per-token E4M3 activations (JAX)",
        "n_records": len(records),
        "cosine": {"all": _stats(np.concatenate(all_cos)), "per_language": per_lang},
        "retrieval_top1": {k: v for k, v in retrieval.items() if v is not None},
        "weights": _weight_table(weights),
    }
    if eval_fn is not None:
        scores = {k: dict(eval_fn(_encode_fn(e, batch_size))) for k, e in sides.items()}
        report["eval"] = {
            **scores,
            "delta": {m: scores["fp8"][m] - v for m, v in scores["reference"].items()},
        }
    return report


def _round(x: np.ndarray, dtype: str) -> np.ndarray:
    """The value the export stores (bf16 round-to-nearest-even), back in float32."""
    return x if dtype == "float32" else x.astype(ml_dtypes.bfloat16).astype(np.float32)


def _norms(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def _embed_records(encoder: Encoder, records, batch_size, progress) -> dict[str, np.ndarray]:
    """Query and document embeddings, one row per record (NaN rows where a field is absent).

    Both fields go through one `encode` call with their prompts already prefixed, so that a
    small calibration set compiles a single program per side.
    """
    texts, slots = [], []
    for field, keys in (("query", ("query",)), ("document", ("title", "text"))):
        prefix = encoder.settings.prompt_text(field)
        for i, r in enumerate(records):
            text = next((r[k] for k in keys if k in r), None)
            if text is not None:
                texts.append(prefix + text)
                slots.append((field, i))
    vectors = encoder.encode(
        texts, batch_size=max(1, min(batch_size, len(texts))), progress=progress
    )
    out = {
        f: np.full((len(records), encoder.dim), np.nan, np.float32) for f in ("query", "document")
    }
    for (field, i), vector in zip(slots, vectors, strict=True):
        out[field][i] = vector
    return out


def _retrieval(emb, rows) -> dict[str, float] | None:
    """Query -> title top-1 within the language, under both sides."""
    result = {}
    for side in ("reference", "fp8"):
        q, d = emb[side]["query"][rows], emb[side]["document"][rows]
        if np.isnan(q).any() or np.isnan(d).any() or len(rows) < 2:
            return None
        result[side] = float(np.mean((q @ d.T).argmax(1) == np.arange(len(rows))))
    result["delta"] = result["fp8"] - result["reference"]
    return result


def _encode_fn(encoder: Encoder, batch_size: int) -> EncodeFn:
    return lambda texts, prompt=None: encoder.encode(
        list(texts), prompt=prompt, batch_size=batch_size
    )


def _weight_table(errors: Mapping[str, float]) -> dict[str, Any]:
    """Relative errors as {layer: {linear: error}} plus the summary."""
    by_layer: dict[str, dict[str, float]] = {}
    for path, err in errors.items():
        _, layer, *rest = path.split(".")
        by_layer.setdefault(layer, {})[".".join(rest[:-1])] = err
    values = np.array(list(errors.values()) or [0.0])
    worst = max(errors, key=errors.get) if errors else None
    return {
        "relative_frobenius_error": by_layer,
        "mean": float(values.mean()),
        "max": float(values.max()),
        "worst": worst,
    }


def check(report: Mapping[str, Any], min_cosine: float) -> None:
    """Raise `QualityError` naming every language whose mean cosine is below `min_cosine`."""
    bad = {
        lang: s["mean"]
        for lang, s in report["cosine"]["per_language"].items()
        if s["mean"] < min_cosine
    }
    if bad:
        listing = ", ".join(f"{lang}: {v:.4f}" for lang, v in sorted(bad.items()))
        raise QualityError(
            f"FP8 embeddings fall below the quality gate (mean cosine to the reference < "
            f"{min_cosine}) for {listing}; export a bf16 checkpoint instead, or pass "
            "--no-quality-gate (min_cosine=None) to write it anyway"
        )

"""The sentence-transformers side of a model directory: pooling, normalisation, maximum length
and prompts (`modules.json`, `1_Pooling/config.json`, `sentence_bert_config.json`,
`config_sentence_transformers.json`), read by `read_settings` and written by `write_settings`."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

from compass_jax.configio import ConfigError, Count, check
from compass_jax.jsonio import read_json, write_json


@dataclasses.dataclass(frozen=True)
class EmbedderSettings:
    pooling: str
    normalize: bool
    max_length: int
    prompts: dict[str, str] = dataclasses.field(default_factory=dict)
    default_prompt_name: str | None = None

    def prompt_text(self, name: str | None) -> str:
        """The prefix for prompt `name` ("query", "document", or any name the model defines).

        "document" falls back to "passage" (the E5 spelling); "query" and "document" mean no
        prefix when the model defines none; a None name uses the model's default prompt, if
        any, as sentence-transformers does.
        """
        name = name or self.default_prompt_name
        if name is None:
            return ""
        for candidate in (name, "passage" if name == "document" else None):
            if candidate in self.prompts:
                return self.prompts[candidate]
        if name in ("query", "document"):
            return ""  # the two standard roles; many models (MiniLM, Qwen3 documents) have none
        raise ConfigError(f"prompt {name!r} is not defined; the model has {sorted(self.prompts)}")


_ARCH_POOLING = {"bert": "mean", "xlm-roberta": "mean", "qwen3": "last"}
_POOLING_KEYS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_lasttoken": "last",
}
_UNSUPPORTED_POOLING = (
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
)


def _pooling_mode(path: str) -> str:
    cfg = read_json(path)
    if "pooling_mode" in cfg:  # the compact form newer sentence-transformers may write
        compact = {"mean": "mean", "cls": "cls", "lasttoken": "last"}
        if cfg["pooling_mode"] not in compact:
            raise ConfigError(f"{path}: pooling_mode {cfg['pooling_mode']!r} is not supported")
        return compact[cfg["pooling_mode"]]
    unsupported = [k for k in _UNSUPPORTED_POOLING if cfg.get(k)]
    chosen = [mode for key, mode in _POOLING_KEYS.items() if cfg.get(key)]
    if unsupported or len(chosen) != 1:
        raise ConfigError(
            f"{path}: need exactly one of {sorted(_POOLING_KEYS)} set "
            f"(found {chosen}; unsupported modes set: {unsupported})"
        )
    if cfg.get("include_prompt", True) is False:
        raise ConfigError(f"{path}: include_prompt = false (prompt-excluded pooling) unsupported")
    return chosen[0]


def read_settings(model_dir: str | os.PathLike, arch: str, *, default_max_length: int):
    """Embedder settings from the sentence-transformers files, or architecture defaults
    (mean pooling for encoders, last token for decoders; normalised) for a bare HF dir."""
    model_dir = os.fspath(model_dir)
    pooling, normalize = _ARCH_POOLING[arch], True
    modules_path = os.path.join(model_dir, "modules.json")
    if os.path.isfile(modules_path):
        modules = check(tuple[Mapping[str, Any], ...], read_json(modules_path, expect=list),
                        modules_path)  # fmt: skip
        kinds = {}  # module type -> its folder; the other fields are sentence-transformers'
        for i, m in enumerate(modules):
            kind = check(str, m.get("type", ""), modules_path, f"[{i}].type").rsplit(".", 1)[-1]
            kinds[kind] = check(str, m.get("path", ""), modules_path, f"[{i}].path")
        unsupported = sorted(set(kinds) - {"Transformer", "Pooling", "Normalize"})
        if unsupported:
            raise ConfigError(
                f"{modules_path}: unsupported sentence-transformers modules {unsupported}"
            )
        if "Pooling" in kinds:
            pooling = _pooling_mode(os.path.join(model_dir, kinds["Pooling"], "config.json"))
        normalize = "Normalize" in kinds
    max_length = default_max_length
    bert_config = os.path.join(model_dir, "sentence_bert_config.json")
    if os.path.isfile(bert_config):
        found = read_json(bert_config).get("max_seq_length")
        max_length = check(Count | None, found, bert_config, "max_seq_length") or max_length
    prompts: dict[str, str] = {}
    default_prompt = None
    st_config = os.path.join(model_dir, "config_sentence_transformers.json")
    if os.path.isfile(st_config):
        data = read_json(st_config)
        prompts = check(dict[str, str], data.get("prompts") or {}, st_config, "prompts")
        default_prompt = check(str | None, data.get("default_prompt_name"), st_config,
                               "default_prompt_name")  # fmt: skip
    return EmbedderSettings(pooling, normalize, max_length, prompts, default_prompt)


# Every mode spelled out: vLLM reads this file itself and mis-reads the compact form.
_POOLING_MODES = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens")
_POOLING_MODES += ("weightedmean_tokens", "lasttoken")
_MODE_OF = {"mean": "mean_tokens", "cls": "cls_token", "last": "lasttoken"}


def write_settings(
    model_dir: str | os.PathLike,
    settings: EmbedderSettings,
    *,
    hidden_size: int,
    versions: dict[str, str] | None = None,
    quantization_config: Mapping[str, Any] | None = None,
) -> list[str]:
    """Write the sentence-transformers package files that `read_settings` reads back:
    `modules.json` (Transformer, Pooling, and Normalize when normalising),
    `sentence_bert_config.json`, `1_Pooling/config.json` in the classic full form,
    `2_Normalize/`, `config_sentence_transformers.json` with the prompts. Returns the paths
    written, relative to `model_dir`. Plain writes: callers build the directory under a
    temporary name (`atomic_dir`).

    `quantization_config` (an FP8 export's, as in `config.json`) makes sentence-transformers
    load the weights dequantised: its Transformer module calls the model's `forward` directly,
    which skips the hook with which compressed-tensors decompresses on the first call, so the
    compressed FP8 weights would reach `F.linear` (`self and mat2 must have the same dtype`).
    transformers' `AutoModel` and vLLM read `config.json` alone and are unaffected."""
    if settings.pooling not in _MODE_OF:
        raise ConfigError(f"pooling: expected one of {sorted(_MODE_OF)}, got {settings.pooling!r}")
    root = os.fspath(model_dir)
    kinds = [("Transformer", ""), ("Pooling", "1_Pooling")]
    kinds += [("Normalize", "2_Normalize")] if settings.normalize else []
    modules = [
        {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
        for i, (kind, path) in enumerate(kinds)
    ]
    chosen = _MODE_OF[settings.pooling]
    pooling = {"word_embedding_dimension": hidden_size}
    pooling |= {f"pooling_mode_{m}": m == chosen for m in _POOLING_MODES}
    pooling["include_prompt"] = True
    files = {
        "modules.json": modules,
        "sentence_bert_config.json": {
            "max_seq_length": settings.max_length,
            "do_lower_case": False,
            **_dequantized(quantization_config),
        },
        "1_Pooling/config.json": pooling,
        "config_sentence_transformers.json": {
            "__version__": dict(versions or {}),
            "model_type": "SentenceTransformer",
            "prompts": dict(settings.prompts),
            "default_prompt_name": settings.default_prompt_name,
            "similarity_fn_name": "cosine",
        },
    }
    for name, data in files.items():
        write_json(os.path.join(root, name), data, indent=2)
    if settings.normalize:
        os.makedirs(os.path.join(root, "2_Normalize"), exist_ok=True)
    return [*files, *(["2_Normalize/"] if settings.normalize else [])]


def _dequantized(quantization_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """`config_kwargs` that replace the model config's `quantization_config` with the same one
    plus transformers' loading attribute `dequantize` (the weights dequantised at load)."""
    if not quantization_config:
        return {}
    return {"config_kwargs": {"quantization_config": {**quantization_config, "dequantize": True}}}


def _evaluation_table(evaluation: Mapping[str, Any]) -> list[str]:
    """`{metric: value}` as two columns, `{row: {column: value}}` as a grid."""
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)
    if all(isinstance(v, Mapping) for v in evaluation.values()):
        columns = list(dict.fromkeys(c for row in evaluation.values() for c in row))
        lines = ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for name, row in evaluation.items():
            lines.append(f"| {name} | " + " | ".join(fmt(row.get(c, "")) for c in columns) + " |")
        return lines
    return ["| metric | value |", "|---|---|"] + [
        f"| {k} | {fmt(v)} |" for k, v in evaluation.items()
    ]


def model_card(
    *,
    title: str,
    architecture: str,
    dim: int,
    settings: EmbedderSettings,
    base_model: str | None = None,
    tags: Sequence[str] = (),
    details: Sequence[str] = (),
    serve: str | None = None,
    evaluation: Mapping[str, Any] | None = None,
    sections: Sequence[str] = (),
) -> str:
    """A README.md model card (Hugging Face front matter) for a sentence-transformers package."""
    front = ["---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity"]
    front += ["tags:"] + [f"- {t}" for t in ("sentence-transformers", "feature-extraction", *tags)]
    front += [f"base_model: {base_model}"] if base_model else []
    front += ["---", ""]
    query = settings.prompt_text("query") if settings.prompts else ""
    usage = [
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "",
        'model = SentenceTransformer("path/to/this/model")',
        'queries = model.encode(["sepatu lari pria"], prompt_name="query")'
        if "query" in settings.prompts
        else 'queries = model.encode(["sepatu lari pria"])',
        'documents = model.encode(["Sepatu Lari Pria Ringan"], prompt_name="document")'
        if any(p in settings.prompts for p in ("document", "passage"))
        else 'documents = model.encode(["Sepatu Lari Pria Ringan"])',
        "```",
    ]
    lines = [*front, f"# {title}", "", *details, ""]
    lines += [
        "| | |",
        "|---|---|",
        f"| architecture | `{architecture}` |",
        f"| embedding dimension | {dim} |",
        f"| pooling | {settings.pooling} |",
        f"| normalised | {settings.normalize} |",
        f"| max sequence length | {settings.max_length} |",
        f"| query prompt | `{query!r}` |" if query else "| query prompt | (none) |",
        "",
        "## Usage",
        "",
        *usage,
    ]
    if serve:
        lines += ["", "Serving with vLLM (prompts are not added by vLLM: prefix them):", "", serve]
    if evaluation:
        lines += ["", "## Evaluation", "", *_evaluation_table(evaluation)]
    for section in sections:
        lines += ["", section.rstrip()]
    return "\n".join(lines) + "\n"

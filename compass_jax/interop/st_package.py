"""Reading the sentence-transformers side of a model directory: pooling, normalisation, maximum
length and prompts (`modules.json`, `1_Pooling/config.json`, `sentence_bert_config.json`,
`config_sentence_transformers.json`)."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from compass_jax.config import ConfigError


@dataclasses.dataclass(frozen=True)
class EmbedderSettings:
    pooling: str
    normalize: bool
    max_length: int
    prompts: dict[str, str] = dataclasses.field(default_factory=dict)
    default_prompt_name: str | None = None

    def prompt_text(self, name: str | None) -> str:
        """The prefix for prompt `name` ("query", "document", or any name the model defines).

        "document" falls back to "passage" (the E5 spelling); a None name uses the model's
        default prompt, if any, as sentence-transformers does.
        """
        name = name or self.default_prompt_name
        if name is None:
            return ""
        for candidate in (name, "passage" if name == "document" else None):
            if candidate in self.prompts:
                return self.prompts[candidate]
        if name == "document":
            return ""  # models such as Qwen3-Embedding put no instruction on documents
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


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None


def _pooling_mode(path: str) -> str:
    cfg = _read_json(path)
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
        modules = _read_json(modules_path)
        kinds = {m.get("type", "").rsplit(".", 1)[-1]: m for m in modules}
        unsupported = sorted(set(kinds) - {"Transformer", "Pooling", "Normalize"})
        if unsupported:
            raise ConfigError(
                f"{modules_path}: unsupported sentence-transformers modules {unsupported}"
            )
        if "Pooling" in kinds:
            pooling = _pooling_mode(
                os.path.join(model_dir, kinds["Pooling"]["path"], "config.json")
            )
        normalize = "Normalize" in kinds
    max_length = default_max_length
    bert_config = os.path.join(model_dir, "sentence_bert_config.json")
    if os.path.isfile(bert_config):
        max_length = int(_read_json(bert_config).get("max_seq_length") or max_length)
    prompts: dict[str, str] = {}
    default_prompt = None
    st_config = os.path.join(model_dir, "config_sentence_transformers.json")
    if os.path.isfile(st_config):
        data = _read_json(st_config)
        prompts = dict(data.get("prompts") or {})
        default_prompt = data.get("default_prompt_name")
    return EmbedderSettings(pooling, normalize, max_length, prompts, default_prompt)

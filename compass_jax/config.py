"""Typed, frozen model configuration and its two-way mapping to Hugging Face `config.json`.

`ModelConfig` is hashable: it is a static argument of every jitted function, so two equal
configs share compiled programs. The HF mapping refuses fields it does not handle rather than
silently converting a variant the encoders do not implement (a RoPE scaling, sliding windows,
relative position embeddings, ...).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any, Literal

Arch = Literal["bert", "xlm-roberta", "qwen3"]
ARCHES: tuple[str, ...] = ("bert", "xlm-roberta", "qwen3")
ComputeDtype = Literal["float32", "bfloat16"]
AttentionImpl = Literal["xla", "cudnn"]


class ConfigError(ValueError):
    """A configuration that compass-jax cannot honour; the message names the source and field."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    arch: Arch
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    max_position_embeddings: int
    norm_eps: float
    hidden_act: str
    pad_token_id: int | None = None
    type_vocab_size: int = 0
    attention_bias: bool = True
    rope_theta: float = 10_000.0
    # Qwen3-Embedding attends causally; the switch gives a bidirectional variant.
    causal: bool = False
    hidden_dropout: float = 0.0
    # Compute dtype; parameters stay float32 (master weights).
    dtype: ComputeDtype = "float32"
    # `jax.nn.dot_product_attention`'s implementation: None lets JAX choose (XLA today);
    # "cudnn" is the fused cuDNN flash kernel (CUDA GPUs, bf16 only).
    attention_impl: AttentionImpl | None = None

    def __post_init__(self):
        if self.arch not in ARCHES:
            raise ConfigError(f"arch: unsupported architecture {self.arch!r}; expected {ARCHES}")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"num_heads ({self.num_heads}) must be a multiple of "
                f"num_kv_heads ({self.num_kv_heads})"
            )
        if self.dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"dtype: expected 'float32' or 'bfloat16', got {self.dtype!r}")
        if self.attention_impl not in (None, "xla", "cudnn"):
            raise ConfigError(
                f"attention_impl: expected 'xla', 'cudnn' or None, got {self.attention_impl!r}"
            )
        if self.attention_impl == "cudnn" and self.dtype != "bfloat16":
            raise ConfigError(
                f"attention_impl: 'cudnn' needs dtype 'bfloat16' (got {self.dtype!r}); cuDNN's "
                "fused attention takes bf16 or fp16 inputs only"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(
                f"hidden_act: unsupported {self.hidden_act!r}; expected {ACTIVATIONS}"
            )

    @property
    def is_decoder(self) -> bool:
        """Qwen3-style blocks: pre-RMSNorm, RoPE, q/k norms, SwiGLU."""
        return self.arch == "qwen3"

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)


ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "silu")

# Fields with no effect on the encoder's forward pass (training metadata, generation settings,
# task heads). Anything outside these and the handled fields is refused.
_IGNORED_HF_FIELDS = frozenset(
    {
        "_name_or_path",
        "architectures",
        "transformers_version",
        "torch_dtype",
        "dtype",
        "model_type",
        "initializer_range",
        "use_cache",
        "bos_token_id",
        "eos_token_id",
        "sep_token_id",
        "cls_token_id",
        "mask_token_id",
        "id2label",
        "label2id",
        "num_labels",
        "problem_type",
        "classifier_dropout",
        "gradient_checkpointing",
        "output_past",
        "output_hidden_states",
        "output_attentions",
        "return_dict",
        "tokenizer_class",
        "tie_word_embeddings",
        "chunk_size_feed_forward",
        "is_encoder_decoder",
        "max_window_layers",
        "attention_dropout",
        "attention_probs_dropout_prob",
        "layer_types",
        "sliding_window",
    }
)

# HF field -> value(s) it must have, because compass-jax implements only that variant.
_REQUIRED_HF_VALUES: dict[str, tuple[Any, ...]] = {
    "position_embedding_type": ("absolute", None),
    "is_decoder": (False,),
    "add_cross_attention": (False,),
    "use_sliding_window": (False, None),
}


def _rope_theta(hf: Mapping[str, Any], source: str) -> float:
    """RoPE base from either the classic (`rope_theta`, `rope_scaling`) or the transformers 5
    (`rope_parameters`) spelling; any scaling other than the default is refused."""
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    for field, block in (("rope_parameters", params), ("rope_scaling", scaling)):
        kind = block.get("rope_type", block.get("type", "default"))
        if kind != "default":
            raise ConfigError(
                f"{source}: field {field!r} asks for RoPE type {kind!r}; only the default "
                "(unscaled) RoPE is implemented"
            )
    return float(params.get("rope_theta", hf.get("rope_theta", 10_000.0)))


def from_hf(hf: Mapping[str, Any], *, source: str = "config.json", **overrides: Any) -> ModelConfig:
    """Build a `ModelConfig` from a HF config dict; `source` names the file in errors."""
    model_type = hf.get("model_type")
    arch = {"bert": "bert", "xlm-roberta": "xlm-roberta", "qwen3": "qwen3"}.get(model_type)
    if arch is None:
        raise ConfigError(
            f"{source}: model_type {model_type!r} is not supported; expected one of {ARCHES}"
        )
    for field, allowed in _REQUIRED_HF_VALUES.items():
        if field in hf and hf[field] not in allowed:
            raise ConfigError(
                f"{source}: field {field!r} = {hf[field]!r} is not supported (supported: {allowed})"
            )
    if any(t != "full_attention" for t in hf.get("layer_types") or ()):
        raise ConfigError(f"{source}: field 'layer_types' asks for non-full attention layers")

    heads = int(hf["num_attention_heads"])
    common = dict(
        arch=arch,
        vocab_size=int(hf["vocab_size"]),
        hidden_size=int(hf["hidden_size"]),
        num_layers=int(hf["num_hidden_layers"]),
        num_heads=heads,
        intermediate_size=int(hf["intermediate_size"]),
        max_position_embeddings=int(hf["max_position_embeddings"]),
        hidden_act=str(hf.get("hidden_act", "gelu")),
        pad_token_id=hf.get("pad_token_id"),
    )
    if arch == "qwen3":
        handled = {
            "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "intermediate_size", "max_position_embeddings",
            "hidden_act", "pad_token_id", "rms_norm_eps", "attention_bias", "rope_theta",
            "rope_scaling", "rope_parameters", "use_sliding_window", "is_causal",
        }  # fmt: skip
        fields = dict(
            common,
            num_kv_heads=int(hf.get("num_key_value_heads") or heads),
            head_dim=int(hf.get("head_dim") or int(hf["hidden_size"]) // heads),
            norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            attention_bias=bool(hf.get("attention_bias", False)),
            rope_theta=_rope_theta(hf, source),
            causal=bool(hf.get("is_causal", True)),
        )
    else:
        handled = {
            "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "intermediate_size", "max_position_embeddings", "hidden_act", "pad_token_id",
            "layer_norm_eps", "type_vocab_size", "hidden_dropout_prob",
            "position_embedding_type", "is_decoder", "add_cross_attention",
        }  # fmt: skip
        fields = dict(
            common,
            num_kv_heads=heads,
            head_dim=int(hf["hidden_size"]) // heads,
            norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
            type_vocab_size=int(hf.get("type_vocab_size", 2)),
            hidden_dropout=float(hf.get("hidden_dropout_prob", 0.0)),
        )
    # An FP8 export: the weight loaders check the scheme (`interop.load.read_config`) and
    # dequantise the weights; the forward pass is this config's.
    handled = handled | {"quantization_config"}
    unknown = sorted(set(hf) - handled - _IGNORED_HF_FIELDS)
    if unknown:
        raise ConfigError(
            f"{source}: fields not handled by compass-jax's {arch} encoder: {unknown}. "
            "Remove them if they do not change the forward pass."
        )
    try:
        return ModelConfig(**{**fields, **overrides})
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def to_hf(cfg: ModelConfig) -> dict[str, Any]:
    """The HF `config.json` dict for `cfg` (architectures that transformers and vLLM load)."""
    common = {
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size,
        "max_position_embeddings": cfg.max_position_embeddings,
        "hidden_act": cfg.hidden_act,
        "pad_token_id": cfg.pad_token_id,
    }
    if cfg.arch == "qwen3":
        return {
            "architectures": ["Qwen3ForCausalLM"],
            "model_type": "qwen3",
            **common,
            "num_key_value_heads": cfg.num_kv_heads,
            "head_dim": cfg.head_dim,
            "rms_norm_eps": cfg.norm_eps,
            "attention_bias": cfg.attention_bias,
            "rope_theta": cfg.rope_theta,
            "rope_scaling": None,
            "use_sliding_window": False,
            "is_causal": cfg.causal,
            "tie_word_embeddings": False,
        }
    return {
        "architectures": ["BertModel" if cfg.arch == "bert" else "XLMRobertaModel"],
        "model_type": cfg.arch,
        **common,
        "layer_norm_eps": cfg.norm_eps,
        "type_vocab_size": cfg.type_vocab_size,
        "hidden_dropout_prob": cfg.hidden_dropout,
        "attention_probs_dropout_prob": 0.0,
        "position_embedding_type": "absolute",
    }


def read_hf_config(model_dir: str | os.PathLike, **overrides: Any) -> ModelConfig:
    """Read `<model_dir>/config.json` into a `ModelConfig`."""
    path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no config.json; is {model_dir!s} a HF model directory?")
    try:
        with open(path, encoding="utf-8") as f:
            hf = json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None
    try:
        return from_hf(hf, source=path, **overrides)
    except KeyError as e:
        raise ConfigError(f"{path}: required field {e.args[0]!r} is missing") from None

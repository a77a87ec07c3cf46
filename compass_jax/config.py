"""Typed, frozen model configuration and its two-way mapping to Hugging Face `config.json`.

`ModelConfig` is hashable: it is a static argument of every jitted function, so two equal
configs share compiled programs. The HF mapping refuses fields it does not handle rather than
silently converting a variant the encoders do not implement (a RoPE scaling, sliding windows,
relative position embeddings, ...).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from compass_jax import configio, jsonio
from compass_jax.configio import ConfigError, Count, Fraction, NonNegativeInt, Positive, Spellings

Arch = Literal["bert", "xlm-roberta", "qwen3"]
ARCHES: tuple[str, ...] = ("bert", "xlm-roberta", "qwen3")
ComputeDtype = Literal["float32", "bfloat16"]
AttentionImpl = Literal["xla", "cudnn"]
# Every spelling of a dtype that commands and configs accept -> its canonical name.
DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16"}


Dtype = Annotated[str, Spellings(tuple(DTYPES.items()))]  # a field or flag: any spelling


def canonical_dtype(name: str, where: str = "dtype") -> str:
    """The canonical name ("float32" | "bfloat16") of any spelling in `DTYPES`, else a
    `ConfigError` naming `where`."""
    return configio.check(Dtype, name, where)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    arch: Arch
    vocab_size: Count
    hidden_size: Count
    num_layers: Count
    num_heads: Count
    num_kv_heads: Count
    head_dim: Count
    intermediate_size: Count
    max_position_embeddings: Count
    norm_eps: Positive
    hidden_act: str
    pad_token_id: int | None = None
    type_vocab_size: NonNegativeInt = 0
    attention_bias: bool = True
    rope_theta: Positive = 10_000.0
    # Qwen3-Embedding attends causally; the switch gives a bidirectional variant.
    causal: bool = False
    hidden_dropout: Fraction = 0.0
    # Compute dtype; parameters stay float32 (master weights).
    dtype: ComputeDtype = "float32"
    # `jax.nn.dot_product_attention`'s implementation: None lets JAX choose (XLA today);
    # "cudnn" is the fused cuDNN flash kernel (CUDA GPUs, bf16 only).
    attention_impl: AttentionImpl | None = None
    # Matryoshka output widths, as vLLM reads them from `config.json` (`is_matryoshka`,
    # `matryoshka_dimensions`): any width when declared without dimensions, else only those.
    is_matryoshka: bool = False
    matryoshka_dims: tuple[Count, ...] = ()

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
        if any(not 0 < d <= self.hidden_size for d in self.matryoshka_dims):
            raise ConfigError(
                f"matryoshka_dimensions {list(self.matryoshka_dims)}: each must be in "
                f"1..{self.hidden_size} (hidden_size)"
            )

    @property
    def is_decoder(self) -> bool:
        """Qwen3-style blocks: pre-RMSNorm, RoPE, q/k norms, SwiGLU."""
        return self.arch == "qwen3"

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def check_dim(self, dim: int | None, where: str = "--dim") -> None:
        """An output width for Matryoshka truncation: 1..hidden_size, and, when the model
        declares its dimensions, one of them or the full width (as vLLM checks a request's
        `dimensions`)."""
        if dim is None:
            return
        if not 0 < dim <= self.hidden_size:
            raise ConfigError(f"{where} {dim}: must be in 1..{self.hidden_size}")
        allowed = {*self.matryoshka_dims, self.hidden_size}
        if self.matryoshka_dims and dim not in allowed:
            raise ConfigError(
                f"{where} {dim}: the model declares Matryoshka dimensions {sorted(allowed)}"
            )


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
    block = Mapping[str, Any] | None
    params = configio.check(block, hf.get("rope_parameters"), source, "rope_parameters") or {}
    scaling = configio.check(block, hf.get("rope_scaling"), source, "rope_scaling") or {}
    for field, value in (("rope_parameters", params), ("rope_scaling", scaling)):
        kind = value.get("rope_type", value.get("type", "default"))
        if kind != "default":
            raise ConfigError(
                f"{source}: field {field!r} asks for RoPE type {kind!r}; only the default "
                "(unscaled) RoPE is implemented"
            )
    where = "rope_parameters.rope_theta" if "rope_theta" in params else "rope_theta"
    theta = params.get("rope_theta", hf.get("rope_theta"))
    return configio.check(_field_hints()["rope_theta"], 10_000.0 if theta is None else theta,
                          source, where)  # fmt: skip


# HF field -> ModelConfig field: each value is checked against the ModelConfig field's type
# and range (`configio.check`), so an error names the HF field and the file.
_COMMON_FIELDS = {
    "vocab_size": "vocab_size", "hidden_size": "hidden_size", "num_hidden_layers": "num_layers",
    "num_attention_heads": "num_heads", "intermediate_size": "intermediate_size",
    "max_position_embeddings": "max_position_embeddings", "hidden_act": "hidden_act",
    "pad_token_id": "pad_token_id", "is_matryoshka": "is_matryoshka",
    "matryoshka_dimensions": "matryoshka_dims",
}  # fmt: skip
_ENCODER_FIELDS = {"layer_norm_eps": "norm_eps", "type_vocab_size": "type_vocab_size",
                   "hidden_dropout_prob": "hidden_dropout"}  # fmt: skip
_DECODER_FIELDS = {"num_key_value_heads": "num_kv_heads", "head_dim": "head_dim",
                   "rms_norm_eps": "norm_eps", "attention_bias": "attention_bias",
                   "is_causal": "causal"}  # fmt: skip
# Defaults of optional HF fields (absent or null); the others are required.
_HF_DEFAULTS = {
    "hidden_act": "gelu", "pad_token_id": None, "is_matryoshka": False,
    "matryoshka_dimensions": (), "layer_norm_eps": 1e-12, "type_vocab_size": 2,
    "hidden_dropout_prob": 0.0, "rms_norm_eps": 1e-6, "attention_bias": False, "is_causal": True,
}  # fmt: skip


@functools.cache
def _field_hints() -> dict[str, Any]:
    return typing.get_type_hints(ModelConfig, include_extras=True)


def _hf_fields(hf: Mapping[str, Any], names: Mapping[str, str], source: str) -> dict[str, Any]:
    """`{ModelConfig field: value}` for the HF fields `names`, each checked."""
    fields = {}
    for name, field in names.items():
        value = hf.get(name)
        if value is None and name in _HF_DEFAULTS:
            value = _HF_DEFAULTS[name]
        elif value is None and name not in hf:
            raise ConfigError(f"{source}: required field {name!r} is missing")
        fields[field] = configio.check(_field_hints()[field], value, source, name)
    return fields


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
    layer_types = configio.check(
        tuple[str, ...] | None, hf.get("layer_types"), source, "layer_types"
    )
    if any(t != "full_attention" for t in layer_types or ()):
        raise ConfigError(f"{source}: field 'layer_types' asks for non-full attention layers")

    names = {**_COMMON_FIELDS, **(_DECODER_FIELDS if arch == "qwen3" else _ENCODER_FIELDS)}
    fields = {"arch": arch, **_hf_fields(hf, _COMMON_FIELDS, source)}
    heads, width = fields["num_heads"], fields["hidden_size"]
    if arch == "qwen3":
        defaults = {"num_key_value_heads": heads, "head_dim": width // heads}
        fields |= _hf_fields({**defaults, **{k: v for k, v in hf.items() if v is not None}},
                             _DECODER_FIELDS, source)  # fmt: skip
        fields["rope_theta"] = _rope_theta(hf, source)
        handled = set(names) | {"rope_theta", "rope_scaling", "rope_parameters",
                                "use_sliding_window"}  # fmt: skip
    else:
        if width % heads:
            raise ConfigError(
                f"{source}: hidden_size {width} is not a multiple of num_attention_heads {heads}"
            )
        fields |= _hf_fields(hf, _ENCODER_FIELDS, source)
        fields |= {"num_kv_heads": heads, "head_dim": width // heads}
        handled = set(names) | {"position_embedding_type", "is_decoder", "add_cross_attention"}
    # vLLM's reading: declared dimensions make a model Matryoshka.
    fields["is_matryoshka"] = fields["is_matryoshka"] or bool(fields["matryoshka_dims"])
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
    if cfg.is_matryoshka:
        common["is_matryoshka"] = True
    if cfg.matryoshka_dims:
        common["matryoshka_dimensions"] = list(cfg.matryoshka_dims)
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
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no config.json; is {model_dir!s} a HF model directory?")
    return from_hf(jsonio.read_json(path), source=path, **overrides)

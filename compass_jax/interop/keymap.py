"""HF checkpoint key <-> compass-jax param path, one table per architecture, usable both ways.

A rule is `(hf_key, param_path, transform)` where `{i}` stands for a layer index. Loading
matches each checkpoint key against every rule and demands exactly one match; exporting runs
the same table in reverse. A `param_path` of None marks a key that is ignored on purpose
(buffers, task heads an embedder does not use).
"""

from __future__ import annotations

import dataclasses
import functools
import re

import numpy as np

LINEAR = "linear"  # torch Linear [out, in] <-> kernel [in, out]
COPY = "copy"


@functools.cache
def _compile(template: str) -> re.Pattern[str]:
    return re.compile(re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)") + "$")


@dataclasses.dataclass(frozen=True)
class Rule:
    hf_key: str
    path: str | None
    transform: str = COPY
    why_ignored: str = ""

    def _regex(self, template: str) -> re.Pattern[str]:
        return _compile(template)

    def match_hf(self, key: str) -> dict[str, str] | None:
        m = self._regex(self.hf_key).match(key)
        return m.groupdict() if m else None

    def match_path(self, path: str) -> dict[str, str] | None:
        if self.path is None:
            return None
        m = self._regex(self.path).match(path)
        return m.groupdict() if m else None


def _linear(hf: str, ours: str, *, bias: bool) -> list[Rule]:
    rules = [Rule(f"{hf}.weight", f"{ours}.kernel", LINEAR)]
    if bias:
        rules.append(Rule(f"{hf}.bias", f"{ours}.bias"))
    return rules


def _norm(hf: str, ours: str, *, bias: bool) -> list[Rule]:
    rules = [Rule(f"{hf}.weight", f"{ours}.scale")]
    if bias:
        rules.append(Rule(f"{hf}.bias", f"{ours}.bias"))
    return rules


def _bert_rules() -> list[Rule]:
    layer, ours = "encoder.layer.{i}", "layers.{i}"
    return [
        Rule("embeddings.word_embeddings.weight", "embeddings.token.embedding"),
        Rule("embeddings.position_embeddings.weight", "embeddings.position.embedding"),
        Rule("embeddings.token_type_embeddings.weight", "embeddings.token_type.embedding"),
        *_norm("embeddings.LayerNorm", "embeddings.norm", bias=True),
        *_linear(f"{layer}.attention.self.query", f"{ours}.attn.q_proj", bias=True),
        *_linear(f"{layer}.attention.self.key", f"{ours}.attn.k_proj", bias=True),
        *_linear(f"{layer}.attention.self.value", f"{ours}.attn.v_proj", bias=True),
        *_linear(f"{layer}.attention.output.dense", f"{ours}.attn.o_proj", bias=True),
        *_norm(f"{layer}.attention.output.LayerNorm", f"{ours}.attn_norm", bias=True),
        *_linear(f"{layer}.intermediate.dense", f"{ours}.mlp.up_proj", bias=True),
        *_linear(f"{layer}.output.dense", f"{ours}.mlp.down_proj", bias=True),
        *_norm(f"{layer}.output.LayerNorm", f"{ours}.mlp_norm", bias=True),
        Rule("embeddings.position_ids", None, why_ignored="buffer"),
        Rule("embeddings.token_type_ids", None, why_ignored="buffer"),
        Rule("pooler.dense.weight", None, why_ignored="unused CLS pooler head"),
        Rule("pooler.dense.bias", None, why_ignored="unused CLS pooler head"),
    ]


def _qwen3_rules(attention_bias: bool) -> list[Rule]:
    layer, ours = "layers.{i}", "layers.{i}"
    rules = [Rule("embed_tokens.weight", "embeddings.token.embedding")]
    for p in ("q", "k", "v", "o"):
        rules += _linear(
            f"{layer}.self_attn.{p}_proj", f"{ours}.attn.{p}_proj", bias=attention_bias
        )
    for p in ("gate", "up", "down"):
        rules += _linear(f"{layer}.mlp.{p}_proj", f"{ours}.mlp.{p}_proj", bias=False)
    return [
        *rules,
        *_norm(f"{layer}.self_attn.q_norm", f"{ours}.attn.q_norm", bias=False),
        *_norm(f"{layer}.self_attn.k_norm", f"{ours}.attn.k_norm", bias=False),
        *_norm(f"{layer}.input_layernorm", f"{ours}.attn_norm", bias=False),
        *_norm(f"{layer}.post_attention_layernorm", f"{ours}.mlp_norm", bias=False),
        *_norm("norm", "final_norm", bias=False),
        Rule("lm_head.weight", None, why_ignored="language-model head, unused by an embedder"),
        Rule("rotary_emb.inv_freq", None, why_ignored="buffer"),
        Rule(f"{layer}.self_attn.rotary_emb.inv_freq", None, why_ignored="buffer"),
    ]


def rules_for(arch: str, *, attention_bias: bool = False) -> list[Rule]:
    if arch in ("bert", "xlm-roberta"):
        return _bert_rules()
    if arch == "qwen3":
        return _qwen3_rules(attention_bias)
    raise ValueError(f"no key table for architecture {arch!r}")


# Checkpoints saved from a task model (BertForMaskedLM, Qwen3ForCausalLM, ...) prefix the
# backbone's keys; the prefix is dropped before matching.
PREFIXES = {"bert": ("bert.",), "xlm-roberta": ("roberta.",), "qwen3": ("model.",)}


def strip_prefix(arch: str, key: str) -> str:
    for prefix in PREFIXES[arch]:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def relayout(transform: str, array: np.ndarray) -> np.ndarray:
    """Between HF and params layout; every transform is its own inverse (a transpose)."""
    return array.T if transform == LINEAR else array

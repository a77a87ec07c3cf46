"""`make_generator`: the backend named in the config. Backends import `base`, never this
module, so the package has no import cycle; each backend is imported only when chosen (vLLM
and PyTorch are optional)."""

from __future__ import annotations

import importlib

from pipelines.generate.base import Generator, GeneratorConfig

BACKENDS = {
    "template": "pipelines.generate.template:TemplateGenerator",
    "openai": "pipelines.generate.openai_backend:OpenAIGenerator",
    "vllm": "pipelines.generate.vllm_backend:VLLMGenerator",
    "transformers": "pipelines.generate.transformers_backend:TransformersGenerator",
}


def make_generator(cfg: GeneratorConfig, cache_dir=None) -> Generator:
    if cfg.backend not in BACKENDS:
        raise ValueError(
            f"generator backend {cfg.backend!r}: expected template, openai, vllm or transformers"
        )
    module, _, name = BACKENDS[cfg.backend].partition(":")
    return getattr(importlib.import_module(module), name)(cfg, cache_dir)

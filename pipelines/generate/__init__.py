"""Context-grounded generation behind one interface, with interchangeable backends.

`make_generator(cfg, cache_path)` returns a `Generator`; `generate(requests)` returns one
`Result` per request: JSON validated against the request's schema (retried on failure) or the
error of the last attempt. Answers are cached by prompt hash, so a re-run pays nothing twice.
Backends: `template` (offline, deterministic, no model), `openai` (any OpenAI-compatible HTTP
server), `vllm` (offline batch generation on a GPU) and `transformers` (a local causal LM).
"""

from pipelines.generate.base import Generator, GeneratorConfig, Request, Result, make_generator

__all__ = ["Generator", "GeneratorConfig", "Request", "Result", "make_generator"]

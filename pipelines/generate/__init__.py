"""Context-grounded generation behind one interface, with interchangeable backends.

`make_generator(cfg, cache_dir)` returns a `Generator`; `generate(requests)` returns one
`Result` per request: JSON validated against the request's schema (retried on failure) or the
error of the last attempt. Answers are cached by prompt hash, so a re-run pays nothing twice,
and `stats` counts requests, backend calls, cache hits, retries and failures for the build
report. Backends: `template` (offline, deterministic, no model), `openai` (any OpenAI-compatible
HTTP server, e.g. a vLLM server), `vllm` (offline batch generation on a GPU) and
`transformers` (a local causal LM).
"""

from pipelines.generate.base import Generator, GeneratorConfig, Request, Result
from pipelines.generate.factory import make_generator

__all__ = ["Generator", "GeneratorConfig", "Request", "Result", "make_generator"]

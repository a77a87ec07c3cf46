"""The `vllm` backend: offline batch generation with `vllm.LLM` on a GPU host.

vLLM is imported only when this backend is built (it is an optional, GPU-only dependency).
Answers are constrained to the request's JSON schema with vLLM's structured outputs when the
installed version offers them; they are validated (and retried) here either way.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipelines.generate.base import Generator, Request


def _sampling_params(vllm, cfg, schema: dict | None, seed: int):
    kwargs = {"temperature": cfg.temperature, "max_tokens": cfg.max_tokens, "seed": seed}
    if schema is not None:
        try:  # vLLM >= 0.10
            from vllm.sampling_params import StructuredOutputsParams

            kwargs["structured_outputs"] = StructuredOutputsParams(json=schema)
        except ImportError:
            try:  # earlier releases
                from vllm.sampling_params import GuidedDecodingParams

                kwargs["guided_decoding"] = GuidedDecodingParams(json=schema)
            except ImportError:
                pass
    return vllm.SamplingParams(**kwargs)


class VLLMGenerator(Generator):
    name = "vllm"

    def __init__(self, cfg, cache_dir=None):
        super().__init__(cfg, cache_dir)
        if not cfg.model:
            raise ValueError("generator.model: the vllm backend needs a model path or hub id")
        self._llm = None

    @property
    def llm(self):
        if self._llm is None:
            try:
                import vllm
            except ImportError:
                raise ImportError(
                    "generator.backend=vllm needs vLLM on a GPU host: "
                    "pip install 'compass-jax[serve]'"
                ) from None
            self._vllm = vllm
            self._llm = vllm.LLM(model=self.cfg.model, seed=0)
        return self._llm

    def complete(self, requests: Sequence[Request], attempt: int) -> list[str | None]:
        llm = self.llm
        params = [
            _sampling_params(self._vllm, self.cfg, r.schema, r.seed + 7919 * attempt)
            for r in requests
        ]
        outputs = llm.chat([list(r.messages) for r in requests], params, use_tqdm=False)
        return [o.outputs[0].text if o.outputs else None for o in outputs]

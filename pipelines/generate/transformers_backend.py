"""The `transformers` backend: a local causal LM directory (no hub access, no remote code),
generating on CPU or one GPU with PyTorch. For small models and checks, not for scale."""

from __future__ import annotations

from collections.abc import Sequence

from pipelines.generate.base import Generator, Request


class TransformersGenerator(Generator):
    name = "transformers"

    def __init__(self, cfg, cache_dir=None):
        super().__init__(cfg, cache_dir)
        if not cfg.model:
            raise ValueError("generator.model: the transformers backend needs a model directory")
        self._model = None

    def _load(self):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self._tok = AutoTokenizer.from_pretrained(self.cfg.model, local_files_only=True)
        self._model = AutoModelForCausalLM.from_pretrained(self.cfg.model, local_files_only=True)
        self._model.eval()

    def _prompt(self, request: Request) -> str:
        messages = list(request.messages)
        if getattr(self._tok, "chat_template", None):
            return self._tok.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        return "\n\n".join(m["content"] for m in messages) + "\n\n"

    def complete(self, requests: Sequence[Request], attempt: int) -> list[str | None]:
        if self._model is None:
            self._load()
        out = []
        for request in requests:  # one at a time: no padding side to get wrong
            self._torch.manual_seed(request.seed + 7919 * attempt)
            enc = self._tok(self._prompt(request), return_tensors="pt")
            with self._torch.no_grad():
                tokens = self._model.generate(
                    **enc,
                    max_new_tokens=self.cfg.max_tokens,
                    do_sample=self.cfg.temperature > 0,
                    temperature=max(self.cfg.temperature, 1e-5),
                    pad_token_id=self._tok.pad_token_id or self._tok.eos_token_id,
                )
            new = tokens[0, enc["input_ids"].shape[1] :]
            out.append(self._tok.decode(new, skip_special_tokens=True))
        return out

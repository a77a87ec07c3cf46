"""`MTEBEncoder`: a compass-jax model as an `mteb` (2.x) encoder, so `mteb.evaluate` can score it
on any task whose data the user has.

```python
import mteb
from compass_jax.eval.mteb_wrapper import MTEBEncoder

results = mteb.evaluate(MTEBEncoder("multilingual-e5-small"), mteb.get_tasks(["STS22"]))
```

mteb is imported only when a wrapper is built: compass-jax does not depend on it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from compass_jax.encoder import Encoder

if TYPE_CHECKING:
    from mteb import TaskMetadata
    from mteb.models import ModelMeta
    from mteb.types import Array, BatchedInput, PromptType
    from torch.utils.data import DataLoader


def _require_mteb() -> None:
    try:
        import mteb  # noqa: F401
    except ImportError:
        raise ImportError(
            "MTEBEncoder needs the mteb package (2.x): pip install 'mteb>=2'"
        ) from None


class MTEBEncoder:
    """An `mteb.models.EncoderProtocol` around `compass_jax.encoder.Encoder`.

    `model` is anything `Encoder.load` takes (a directory, a bundled name, a hub id, a training
    workdir or checkpoint) or a loaded `Encoder`; `dtype` applies only when loading (None: what
    the machine runs fastest, `machine.default_compute_dtype`). `dim` cuts embeddings to a
    Matryoshka prefix (renormalised), `max_length` truncates inputs further than the model's own
    limit. `batch_size`, when set, wins over mteb's `encode_kwargs["batch_size"]`:
    `mteb.evaluate` always fills that in (32), so it cannot tell a user's choice from its default.
    `name` and `revision` override the result-cache identity in `mteb_model_meta`.
    """

    def __init__(
        self,
        model: str | os.PathLike | Encoder | None = None,
        revision: str | None = None,
        *,
        dtype: str | None = None,
        batch_size: int | None = None,
        max_length: int | None = None,
        dim: int | None = None,
        name: str | None = None,
        languages: list[str] | None = None,
    ) -> None:
        _require_mteb()
        self.encoder = model if isinstance(model, Encoder) else Encoder.load(model, dtype=dtype)
        if dim is not None and not 0 < dim <= self.encoder.dim:
            raise ValueError(f"dim must be in 1..{self.encoder.dim}, got {dim}")
        self.batch_size, self.max_length, self.dim = batch_size, max_length, dim
        self.mteb_model_meta = self._model_meta(name, revision, languages)

    def _model_meta(self, name, revision, languages) -> ModelMeta:
        from mteb.models import ModelMeta

        from compass_jax.eval.runner import model_key

        enc, settings = self.encoder, self.encoder.settings
        leaves = jax.tree.leaves(enc.params)
        source = os.path.basename(os.path.normpath(enc.source or enc.path))
        # Settings that change the scores but not the weights go into experiment_kwargs: mteb
        # files those results apart from the full-size run of the same revision.
        experiment = {"dim": self.dim, "max_length": self.max_length}
        return ModelMeta(
            # Our own namespace, so results never pass for the reference (PyTorch) model's.
            name=name or f"compass-jax/{source}",
            # A hash of the weight files and compute dtype: the result cache is keyed on it, so
            # a retrained checkpoint is never answered with an older model's cached scores.
            revision=revision or model_key(enc),
            release_date=None,
            languages=languages,
            n_parameters=sum(x.size for x in leaves),
            memory_usage_mb=round(sum(x.nbytes for x in leaves) / 2**20, 1),
            max_tokens=min(self.max_length or settings.max_length, settings.max_length),
            embed_dim=self.dim or enc.dim,
            license=None,
            open_weights=True,
            public_training_code=None,
            public_training_data=None,
            framework=["JAX"],
            similarity_fn_name="cosine",
            # mteb counts fixed "query: "/"passage: " prefixes as instructions too.
            use_instructions=bool(settings.prompts),
            training_datasets=None,
            experiment_kwargs={k: v for k, v in experiment.items() if v is not None} or None,
            # No loader: this object is the loaded model; mteb.evaluate never needs to load one.
            loader=None,
        )

    def _prompt_name(self, task_metadata: TaskMetadata, prompt_type: PromptType | None):
        """The model's prompt for this task and role, chosen as mteb's sentence-transformers
        wrapper does (task name, task type, then role), else the bare role: the Encoder maps
        "query"/"document" to the model's prefixes (none for models without them) and None to
        the model's default prompt."""
        from mteb.models.abs_encoder import get_prompt_name
        from mteb.types import PromptType

        prompt_type = PromptType(prompt_type) if prompt_type is not None else None
        named = get_prompt_name(self.encoder.settings.prompts, task_metadata, prompt_type)
        return named or (prompt_type.value if prompt_type is not None else None)

    def encode(
        self,
        inputs: DataLoader[BatchedInput],
        *,
        task_metadata: TaskMetadata,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        # All texts in one call: the Encoder sorts them by length across the whole set, which
        # pads less (and compiles fewer shapes) than mteb's unsorted batches would.
        texts = [text for batch in inputs for text in batch["text"]]
        return self.encoder.encode(
            texts,
            prompt=self._prompt_name(task_metadata, prompt_type),
            batch_size=self.batch_size or kwargs.get("batch_size", 32),
            max_length=self.max_length,
            dim=self.dim,
            progress=kwargs.get("show_progress_bar", True),
        )

    # mteb's own cosine functions (torch tensors, as sentence-transformers returns): they
    # renormalise, so scores stay cosines for models saved without a Normalize module.
    def similarity(self, embeddings1: Array, embeddings2: Array) -> Array:
        from mteb.similarity_functions import cos_sim

        return cos_sim(embeddings1, embeddings2)

    def similarity_pairwise(self, embeddings1: Array, embeddings2: Array) -> Array:
        from mteb.similarity_functions import pairwise_cos_sim

        return pairwise_cos_sim(embeddings1, embeddings2)

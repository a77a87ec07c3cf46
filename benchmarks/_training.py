"""The training benchmarks' harness: synthetic labelled pairs, batches through the library's
data path, a training state with the step `compass_jax.trainer` runs (built by the same
`compass_jax.train.setup`), XLA's buffer sizes and FLOP counts. The machine side (load,
contention, timers, the report) is `_machine`'s.

Not a benchmark itself; the `train_*.py` scripts import it (it lives next to them, so running
`python benchmarks/<script>.py` finds it).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time
from typing import Any

import numpy as np

from compass_jax import jsonio

# ---------------------------------------------------------------------------------------------
# Synthetic labelled pairs
# ---------------------------------------------------------------------------------------------

CATEGORIES = (
    "running shoes",
    "phone case",
    "water bottle",
    "frying pan",
    "wireless earbuds",
    "backpack",
    "rice cooker",
    "face serum",
    "yoga mat",
    "smart watch",
    "power bank",
    "desk lamp",
    "gaming mouse",
    "baby diapers",
    "sunscreen",
    "cotton t-shirt",
    "air fryer",
    "umbrella",
    "coffee grinder",
    "bike helmet",
    "sleeping bag",
    "hair dryer",
    "mechanical keyboard",
    "kettle",
)
ADJECTIVES = (
    "red",
    "blue",
    "black",
    "white",
    "light",
    "large",
    "small",
    "cheap",
    "new",
    "waterproof",
    "premium",
    "portable",
    "original",
    "foldable",
    "ergonomic",
    "organic",
    "wooden",
    "steel",
)
BRANDS = (
    "acme",
    "zenith",
    "orbit",
    "nova",
    "pico",
    "terra",
    "lumen",
    "vista",
    "kappa",
    "ion",
    "quill",
    "sol",
    "delta",
    "maru",
    "aster",
    "brio",
)
EXTRAS = (
    "free shipping",
    "official store",
    "1 year warranty",
    "pack of 3",
    "2024 edition",
    "with gift box",
    "ready stock",
    "size S M L XL",
    "100% authentic",
    "bundle deal",
)


def make_pairs(
    path: str | os.PathLike, n: int = 2048, seed: int = 0, min_words: int = 0
) -> pathlib.Path:
    """A JSONL of contrastive records in two tasks, like `tests/train_fixtures.make_pairs` but
    with more variety: `retrieval` (query -> product title, one hard negative: the same brand's
    title in another category, no label) and `classification` (title -> category name, labelled,
    so many examples share a positive text: the case CAM exists for; its hard negative, another
    category's name, carries that category's label). Natural lengths are short
    (about 8-20 tokens); `min_words` > 0 lengthens every text with product-description words to at
    least that many words (each at least one token), so that texts fill a fixed token length."""
    rng = np.random.default_rng(seed)
    vocabulary = [w for phrase in ADJECTIVES + EXTRAS + CATEGORIES for w in phrase.split()]

    def lengthen(text: str) -> str:
        missing = min_words - len(text.split())
        return text if missing <= 0 else f"{text} {' '.join(rng.choice(vocabulary, missing))}"

    records = []
    for i in range(n):
        c = int(rng.integers(len(CATEGORIES)))
        other = (c + 1 + int(rng.integers(len(CATEGORIES) - 1))) % len(CATEGORIES)
        adj = rng.choice(ADJECTIVES, 3, replace=False)
        brand, extra = rng.choice(BRANDS), rng.choice(EXTRAS)
        title = f"{brand} {adj[0]} {adj[1]} {CATEGORIES[c]} {adj[2]} {extra} #{i}"
        if i % 2:
            record = {
                "query": f"{adj[0]} {CATEGORIES[c]} by {brand}",
                "positive": title,
                "negatives": [f"{brand} {adj[0]} {CATEGORIES[other]} {extra}"],
                "task": "retrieval",
            }
        else:
            record = {
                "query": title,
                "positive": CATEGORIES[c],
                "negatives": [CATEGORIES[other]],
                "negative_labels": [other],
                "label": c,
                "task": "classification",
            }
        if min_words:
            record["query"], record["positive"] = (
                lengthen(record["query"]),
                lengthen(record["positive"]),
            )
            record["negatives"] = [lengthen(t) for t in record["negatives"]]
        records.append({**record, "lang": "en"})
    jsonio.write_jsonl(path, records)
    return pathlib.Path(path)


def tokenized_batches(
    data_path, tokenizer, *, batch_size: int, count: int, seq: int, task: str, negatives: int = 1,
    pack: bool = False, row_multiple: int = 1,
) -> list:  # fmt: skip
    """`count` consecutive global batches (`TrainBatch`es) of one task through the library's
    data path (`PairReader` -> `tokenize_batch`), every text truncated to `seq` tokens: one per
    row padded to `seq`, or packed (`pack`) into rows of `seq` as the trainer packs them."""
    from compass_jax.data.mixture import PairReader
    from compass_jax.data.pairs import read_records, tokenize_batch

    records = read_records(data_path)
    tasks = sorted({r.task for r in records})
    reader = PairReader(
        records, batch_size=batch_size, seed=0, task_weights={t: float(t == task) for t in tasks}
    )
    out = []
    for _ in range(count):
        got, rows = reader.next_batch()
        assert got == task, (got, task)
        out.append(
            tokenize_batch(
                rows,
                tokenizer,
                query_prefix="",
                document_prefix="",
                query_length=seq,
                document_length=seq,
                num_negatives=negatives,
                pack=pack,
                row_multiple=row_multiple,
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# The training step, built as the trainer builds it
# ---------------------------------------------------------------------------------------------


def token_shares(padded, mini_batch: int, packed=None) -> dict[str, float]:
    """Real tokens over computed tokens (the padding share's complement) of an unpacked batch
    (`padded`, one text per row), of the same batch padded per mini-batch to its longest text
    (what sentence-transformers' cached losses compute), of length buckets (each tower padded
    to the power of two from 16 that holds the batch's longest text, `data.bucketing`'s rule)
    and, given, of the same batch `packed`."""
    from compass_jax.data.bucketing import length_buckets, pick_bucket

    real, computed = padded.real_tokens()
    trimmed = bucketed = 0
    for name in ("query", "positive", "negative"):
        _, segments, _ = padded.tower(name)
        lengths = (segments > 0).sum(1)
        if not len(lengths):
            continue
        for i in range(0, len(lengths), mini_batch):
            trimmed += lengths[i : i + mini_batch].max() * len(lengths[i : i + mini_batch])
        seq = segments.shape[1]
        bucketed += pick_bucket(int(lengths.max()), length_buckets(seq)) * len(lengths)
    out = {
        "padded": round(real / computed, 3),
        "bucketed": round(real / bucketed, 3),
        "trimmed_mini_batch": round(real / trimmed, 3),
    }
    if packed is not None:
        out["packed"] = round(packed.real_tokens()[0] / packed.real_tokens()[1], 3)
    return out


TINY = "tiny"  # a model argument: a random 2-layer, 32-wide BERT with MiniLM's tokenizer


def load(model: str):
    """`(model_cfg, params, model_dir, pooling)` of a model argument (bundled name, directory, or
    `tiny`; for `tiny`, `model_dir` is where its tokenizer is)."""
    import jax

    from compass_jax import models
    from compass_jax.config import ModelConfig
    from compass_jax.interop.st_package import read_settings
    from compass_jax.resolve import load_model, resolve_model

    if model == TINY:
        cfg = ModelConfig(
            arch="bert", vocab_size=30522, hidden_size=32, num_layers=2, num_heads=4,
            num_kv_heads=4, head_dim=8, intermediate_size=48, max_position_embeddings=64,
            norm_eps=1e-12, hidden_act="gelu", pad_token_id=0, type_vocab_size=2,
        )  # fmt: skip
        params = jax.tree.map(np.asarray, models.init(cfg, jax.random.key(0)))
        return cfg, params, resolve_model("all-MiniLM-L6-v2"), "mean"
    model_cfg, params, model_dir = load_model(model)
    pooling = read_settings(model_dir, model_cfg.arch, default_max_length=512).pooling
    return model_cfg, params, model_dir, pooling


@dataclasses.dataclass
class Harness:
    """A training state and the step of one spec on it, as `compass_jax.train.setup` builds
    them for `trainer.run` (a one-device mesh unless one is given)."""

    training: Any  # compass_jax.train.TrainSetup
    spec: Any  # compass_jax.train.StepSpec

    @classmethod
    def create(
        cls,
        model_cfg,
        params,
        pooling: str,
        *,
        chunk: int | None,
        loss,
        dtype: str = "float32",
        mesh=None,
        learning_rate: float = 2e-5,
        loss_block: tuple[int, int] = (128, 1024),
        min_sharded_elements: int = 2**16,
        frozen: tuple[str, ...] = (),
    ) -> Harness:
        import jax

        from compass_jax import sharding, train
        from compass_jax.experiment import MeshConfig, TrainConfig
        from compass_jax.optim import OptimConfig

        cfg = TrainConfig(
            model="(benchmark)",
            dtype=dtype,
            losses={"default": loss},
            # Constant learning rate from step 0, like the peers' plain AdamW loops.
            optim=OptimConfig(
                learning_rate=learning_rate, warmup_steps=0, schedule="constant", frozen=frozen
            ),
            mesh=MeshConfig(data=1, fsdp=1, min_sharded_elements=min_sharded_elements),
            gradcache_chunk=chunk,
            loss_block=loss_block,
            steps=1000,
        )
        mesh = mesh or sharding.make_mesh(1, 1, devices=jax.devices()[:1])
        training = train.setup(cfg, model_cfg, params, pooling=pooling, mesh=mesh)
        return cls(training, training.specs["default"])

    def with_spec(self, **changes: Any) -> Harness:
        """The same state (shared, not copied) stepped with another spec: `changes` replace
        `StepSpec` fields (`gradcache_chunk`, `cast_params`, `model`, ...)."""
        return dataclasses.replace(self, spec=dataclasses.replace(self.spec, **changes))

    @property
    def state(self):
        return self.training.state

    def put(self, local):
        """A host `TrainBatch` placed on the mesh like the trainer places it."""
        import jax

        from compass_jax import train

        return jax.device_put(local, train.batch_shardings(self.training.mesh))

    def compile(self, batch) -> dict[str, Any]:
        """Compile ahead of time for `batch`'s shapes (arrays or ShapeDtypeStructs); returns
        seconds and XLA's buffer sizes."""
        tic = time.perf_counter()
        compiled = self.training.compile(self.spec, batch)
        seconds = time.perf_counter() - tic
        return {"compile_s": round(seconds, 2), **xla_memory(compiled)}

    def dispatch(self, batch):
        """One step, not waited for (state updated in place); its metrics (device arrays)."""
        return self.training.run(self.spec, batch)

    def run(self, batch) -> tuple[float, dict[str, float]]:
        """One step (state updated in place); `(wall seconds, scalar metrics)`."""
        import jax

        tic = time.perf_counter()
        metrics = self.dispatch(batch)
        jax.block_until_ready((self.training.state, metrics))
        seconds = time.perf_counter() - tic
        return seconds, {k: float(v) for k, v in jax.device_get(metrics).items()}


def xla_memory(compiled) -> dict[str, Any]:
    """XLA's buffer assignment of a compiled program (the live temporaries at its peak plus its
    arguments and outputs); known before running, so it also sizes programs too big to run."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        return {}
    if m is None:
        return {}
    arg, out, alias, temp = (
        int(getattr(m, f"{k}_size_in_bytes", 0)) for k in ("argument", "output", "alias", "temp")
    )
    return {
        "xla_temp_bytes": temp,
        "xla_argument_bytes": arg,
        "xla_output_bytes": out,
        "xla_total_bytes": arg + out - alias + temp,
    }


# ---------------------------------------------------------------------------------------------
# FLOP counts
# ---------------------------------------------------------------------------------------------


def matmul_params(params) -> int:
    """Parameters that take part in matmuls: every Dense `kernel` (embedding tables are
    gathers, norms and biases are elementwise)."""
    from compass_jax import tree

    return sum(
        int(np.prod(np.shape(v))) for p, v in tree.flatten(params).items() if p.endswith(".kernel")
    )


def attention_forward_flops(model_cfg, seq: int, sequences: int) -> float:
    """`q k^T` and `p v` of every layer, forward only; causal attention counts the half of the
    score matrix it computes (as MaxText does)."""
    per_seq = 4 * seq * seq * model_cfg.num_heads * model_cfg.head_dim * model_cfg.num_layers
    return per_seq * sequences * (0.5 if model_cfg.causal else 1.0)


def step_flops(model_cfg, params, *, seq: int, sequences: int, gradcache: bool) -> dict[str, float]:
    """Model FLOPs of one training step (6 N per token + attention, forward and backward) and
    the hardware FLOPs the step really executes (GradCache adds one forward pass)."""
    n = matmul_params(params)
    tokens = seq * sequences
    attn = attention_forward_flops(model_cfg, seq, sequences)
    model = 6 * n * tokens + 3 * attn
    hardware = model + (2 * n * tokens + attn if gradcache else 0.0)
    return {"matmul_params": n, "tokens": tokens, "model_flops": model, "hardware_flops": hardware}

"""The demo's stages: the data build, the training runs, the exports and the FP8 agreement.

Each stage resumes: the data build and training continue where they stopped, exports already
written are kept, and a trained workdir becomes a HF directory once (`compass_jax.resolve`).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from compass_jax.workflows.demo.sizes import TRAIN_TASKS, Size


class Stages:
    """Stage banners with elapsed times, collected for the report."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.start = time.perf_counter()

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        print(f"\n== {name} ({time.perf_counter() - self.start:.0f} s so far)", flush=True)
        tic = time.perf_counter()
        result = fn()
        self.seconds[name] = round(time.perf_counter() - tic, 1)
        print(f"== {name}: {self.seconds[name]:.0f} s", flush=True)
        return result


def simulate_devices(n: int) -> None:
    """Split the host CPU into `n` JAX devices; only possible before JAX starts its backends
    (when something started them already, e.g. tests with their own device count, the devices
    stay as they are)."""
    import jax

    with contextlib.suppress(RuntimeError):
        jax.config.update("jax_num_cpu_devices", n)


def build_data(out: str, size: Size, seed: int = 0, *, progress: bool = True) -> dict[str, str]:
    """Build the bundled catalog into `out/data`: the training JSONL, the held-out suite and the
    general suite (`{"train", "suite", "general"}`: their paths)."""
    from pipelines import build
    from pipelines.config import load_config
    from pipelines.export import export_jsonl
    from pipelines.suite import write_suite

    data = os.path.join(out, "data")
    overrides = [
        f"seed={seed}",
        f"catalog.generate_size={size.products}",
        "catalog.generate_files=2",
        "partitions=4",
        # A larger held-out share than a production build: the suite needs enough examples
        # per language and task to tell models apart.
        'splits={"train": 0.75, "validation": 0.05, "test": 0.2}',
        # Top-level categories (18): classes big enough for classification and clustering on
        # a small held-out split, and for CAM to matter (about 14 same-class examples in a
        # batch of 256, false negatives without the class mask).
        "tasks.category_level=0",
        # The character n-gram teacher at every size: the model teacher would embed every
        # text of a tiny build (the `auto` rule), and the demo's default training reads no
        # hard negatives.
        "mining.teacher=hashing",
    ]
    build.run(load_config(None, overrides), data, progress=progress)
    train = os.path.join(data, "train.jsonl")
    if not os.path.exists(train):
        export_jsonl(data, train, split="train", tasks=TRAIN_TASKS)
    suite = write_suite(data, os.path.join(data, "suite"), max_per_task=size.eval_per_task)
    return {"train": train, "suite": suite, "general": _general_suite(data, size)}


def _general_suite(data: str, size: Size) -> str:
    """The general suite's file: the default one (built once per machine), or at
    `size.general_pairs` pairs per language a small one under `data`."""
    from pipelines.general_suite import general_suite, write_general_suite

    if size.general_pairs is None:
        return general_suite()
    path = os.path.join(data, "general-suite", "suite.json")
    if not os.path.isfile(path):
        n = size.general_pairs
        write_general_suite(os.path.dirname(path), pairs_per_language=n, distractors=n,
                            progress=False)  # fmt: skip
    return path


def general_suite_info(path: str) -> dict[str, Any]:
    """What the report says of the general suite: its sources (package, version, licence), the
    pairs sampled per language, the distractors, and why there is no STS task."""
    from compass_jax import jsonio

    spec = jsonio.read_json(path)
    meta = spec["metadata"]
    return {
        "name": spec["name"],
        "path": path,
        "sources": [{k: s[k] for k in ("package", "version", "licence")} for s in meta["sources"]],
        "pairs": {lang: info["sampled"] for lang, info in meta["languages"].items()},
        "distractors": meta["distractors"],
        "sts": meta["sts"],
    }


def export_both(model: str, out: str) -> dict[str, str]:
    """`model` exported as bf16 and as FP8 (with its quality gate) under `out`, once."""
    from compass_jax.resolve import load_model
    from compass_jax.workflows.export import export_params

    cfg, params, tokenizer_dir = load_model(model)
    paths = {"bf16": os.path.join(out, "export-bf16"), "fp8": os.path.join(out, "export-fp8")}
    for kind, path in paths.items():
        if not os.path.exists(path):
            export_params(cfg, params, path, tokenizer_from=tokenizer_dir, dtype="bf16",
                          fp8=kind == "fp8", model_name="compass-jax demo (merged)")  # fmt: skip
    return paths


def fp8_agreement(bf16_dir: str, fp8_dir: str, suite, cache_dir: str) -> dict[str, Any]:
    """Cosine between the FP8 export's embeddings (as vLLM computes them) and the bf16 export's,
    over every text of the suite, with its prompt role, per language (the FP8 side comes from
    the evaluation's embedding cache)."""
    from compass_jax.encoder import Encoder
    from compass_jax.eval.runner import EmbeddingCache, model_key

    texts: dict[tuple[str, str], set[str]] = {}
    for task in suite.tasks:
        for record in task.records:
            for field, role in (("query", "query"), ("text", "query"), ("source", "document"),
                                ("target", "document"), ("relevant", "document")):  # fmt: skip
                values = record.get(field, [])
                for t in [values] if isinstance(values, str) else values:
                    texts.setdefault((task.lang, role), set()).add(t)
    dirs = {"bf16": bf16_dir, "fp8": fp8_dir}
    # Both in float32 compute: the weights differ by the export alone (bf16 vs FP8 + per-token
    # activation quantisation), and float32 is the faster CPU path without AMX.
    encoders = {k: Encoder.load(d) for k, d in dirs.items()}
    caches = {k: EmbeddingCache(cache_dir, model_key(e)) for k, e in encoders.items()}
    per_lang: dict[str, list[np.ndarray]] = {}
    for (lang, role), group in sorted(texts.items()):
        group = sorted(group)
        a, b = (caches[k].embed(encoders[k], group, role) for k in ("bf16", "fp8"))
        per_lang.setdefault(lang, []).append(np.sum(a * b, axis=1))
    stats = lambda c: {"n": int(c.size), "mean": float(c.mean()), "min": float(c.min())}
    cos = {lang: np.concatenate(v) for lang, v in per_lang.items()}
    return {"all": stats(np.concatenate(list(cos.values()))),
            "per_language": {lang: stats(c) for lang, c in cos.items()}}  # fmt: skip

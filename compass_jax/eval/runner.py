"""Run a suite against a model: per-task metrics, per-language tables, a weighted average."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from compass_jax import jsonio
from compass_jax.eval import items, metrics
from compass_jax.eval.suite import Suite, Task

# The metric each task type contributes to the weighted average (MTEB's main scores).
MAIN_SCORE = {
    "retrieval": "ndcg@10",
    "classification": "accuracy",
    "clustering": "v_measure",
    "pair_classification": "ap",
    "sts": "spearman",
    "bitext": "accuracy",
}


class EmbeddingCache:
    """Embeddings on disk keyed by (model, prompt, text hash): re-evaluating the same model
    on the same corpus costs nothing, and only new texts are embedded."""

    def __init__(self, directory: str | None, model_key: str):
        self.directory = os.path.join(directory, model_key) if directory else None

    def _path(self, prompt: str | None, text: str) -> str:
        digest = hashlib.sha256(f"{prompt}\x00{text}".encode()).hexdigest()
        return os.path.join(self.directory, digest[:2], digest[2:] + ".npy")

    def embed(self, encoder, texts: Sequence[str], prompt: str | None) -> np.ndarray:
        if self.directory is None:
            return encoder.encode(list(texts), prompt=prompt)
        unique = list(dict.fromkeys(texts))
        found = {t: np.load(p) for t in unique if os.path.exists(p := self._path(prompt, t))}
        missing = [t for t in unique if t not in found]
        if missing:
            for text, vector in zip(missing, encoder.encode(missing, prompt=prompt), strict=True):
                path = self._path(prompt, text)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                tmp = f"{path}.{os.getpid()}.tmp.npy"
                np.save(tmp, vector)
                os.replace(tmp, path)
                found[text] = vector
        return np.stack([found[t] for t in texts])


def model_key(encoder) -> str:
    """Identity of the weights: what was loaded (a directory, workdir or checkpoint), the
    compute dtype, and the names, sizes and mtimes of the files under it."""
    parts = [os.path.abspath(encoder.source or encoder.path), encoder.cfg.dtype]
    for root, _, files in sorted(os.walk(encoder.source or encoder.path)):
        for name in sorted(files):
            st = os.stat(os.path.join(root, name))
            parts.append(f"{os.path.join(root, name)}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _prompt(task: Task, role: str) -> str | None:
    return task.prompts.get(role, role)


def data_digest(task: Task) -> str:
    """Identity of a task's evaluation items (its records and corpus): two results pair item
    by item only when it agrees."""
    text = jsonio.dumps([task.records, task.corpus])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_task(task: Task, encoder, cache: EmbeddingCache) -> dict[str, items.Item]:
    """Each metric's evidence on `task` (`metrics`, `items`)."""
    embed = lambda texts, role: cache.embed(encoder, texts, _prompt(task, role))
    r = task.records
    if task.type == "retrieval":
        corpus = list(dict.fromkeys([t for rec in r for t in rec["relevant"]] + list(task.corpus)))
        position = {t: i for i, t in enumerate(corpus)}
        relevant = [{position[t] for t in rec["relevant"]} for rec in r]
        queries = embed([rec["query"] for rec in r], "query")
        return metrics.retrieval(queries, embed(corpus, "document"), relevant)
    if task.type == "classification":
        x = embed([rec["text"] for rec in r], "query")
        labels = np.unique([rec["label"] for rec in r], return_inverse=True)[1]
        train = np.array([rec["split"] == "train" for rec in r])
        return metrics.classification(x[train], labels[train], x[~train], labels[~train])
    if task.type == "clustering":
        x = embed([rec["text"] for rec in r], "document")
        return metrics.clustering(x, np.unique([rec["label"] for rec in r], return_inverse=True)[1])
    if task.type in ("pair_classification", "sts"):
        a, b = embed([rec["a"] for rec in r], "query"), embed([rec["b"] for rec in r], "query")
        if task.type == "sts":
            return metrics.sts(a, b, np.array([rec["score"] for rec in r], float))
        return metrics.pair_classification(a, b, np.array([rec["label"] for rec in r]))
    if task.type == "bitext":
        source = embed([rec["source"] for rec in r], "document")
        return metrics.bitext(source, embed([rec["target"] for rec in r], "document"))
    raise ValueError(f"task {task.name}: unknown type {task.type!r}")


def evaluate(encoder, suite: Suite, *, cache_dir: str | None = None, progress: bool = True):
    """`{"suite", "model", "dtype", "tasks": {name: {type, lang, weight, main, metrics, items,
    data_digest}}, "by_language", "average"}`; `average` is the weighted mean of the tasks' main
    scores and `dtype` the encoder's compute dtype.

    `items` holds each metric's per-item evidence as plain JSON (`compass_jax.eval.items`: the
    values a mean is taken over, or a statistic's columns) and `data_digest` identifies the
    task's items: what `compass_jax.eval.bootstrap` resamples to compare models, pairing item
    with item."""
    cache = EmbeddingCache(cache_dir, model_key(encoder))
    tasks = {}
    for task in tqdm(suite.tasks, desc=f"eval {suite.name}", unit="task", disable=not progress):
        evidence = run_task(task, encoder, cache)
        scores = metrics.summarize(evidence)
        tasks[task.name] = {
            "type": task.type,
            "lang": task.lang,
            "weight": task.weight,
            "main": scores[MAIN_SCORE[task.type]],
            "metrics": scores,
            "items": jsonio.plain(evidence),
            "data_digest": data_digest(task),
        }
    by_language: dict[str, dict[str, float]] = {}
    for lang in sorted({t["lang"] for t in tasks.values()}):
        mine = [t for t in tasks.values() if t["lang"] == lang]
        by_language[lang] = {
            task_type: float(np.mean([t["main"] for t in mine if t["type"] == task_type]))
            for task_type in sorted({t["type"] for t in mine})
        }
    weights = np.array([t["weight"] for t in tasks.values()])
    mains = np.array([t["main"] for t in tasks.values()])
    average = float((weights * mains).sum() / weights.sum())
    return {"suite": suite.name, "model": encoder.path, "dtype": encoder.cfg.dtype, "tasks": tasks,
            "by_language": by_language, "average": average}  # fmt: skip


def to_markdown(results: dict) -> str:
    """Per-language table (rows: languages, columns: task types) and the task list."""
    types = sorted({t for scores in results["by_language"].values() for t in scores})
    dtype = f" ({results['dtype']})" if "dtype" in results else ""
    lines = [f"# {results['suite']}: {results['model']}{dtype}", "",
             f"Weighted average: **{results['average']:.4f}**", "",
             "| lang | " + " | ".join(types) + " |", "|---" * (len(types) + 1) + "|"]  # fmt: skip
    for lang, scores in results["by_language"].items():
        cells = [f"{scores[t]:.4f}" if t in scores else "" for t in types]
        lines.append(f"| {lang or '-'} | " + " | ".join(cells) + " |")
    lines += ["", "| task | type | lang | main | metrics |", "|---|---|---|---|---|"]
    for name, t in results["tasks"].items():
        detail = ", ".join(f"{k} {v:.4f}" for k, v in t["metrics"].items())
        lines.append(f"| {name} | {t['type']} | {t['lang']} | {t['main']:.4f} | {detail} |")
    return "\n".join(lines) + "\n"

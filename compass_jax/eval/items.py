"""The per-item evidence behind each metric, and the metric recomputed on resamples of its items.

Every metric of `compass_jax.eval.metrics` is one of two kinds, and results store it that way
(plain JSON, next to the aggregate):

- **a mean over items**: retrieval's per-query nDCG@10 / MRR@10 / Recall@k, a classifier's
  per-item correctness, bitext mining's per-pair hits. Stored as the list of per-item values;
  the metric is their mean.
- **a statistic of the whole set**: V-measure, average precision, Spearman, macro-F1. Stored as
  the columns it is computed from, `{"statistic": "v_measure", "labels": [...], "clusters":
  [...]}`; the metric is the statistic of those columns.

A resample is given as multiplicities: `counts[r, i]` is how often item `i` is drawn in resample
`r` (each row sums to the number of items). The same counts applied to two models' items make
a paired comparison.

Clustering keeps the fitted assignments fixed: a resample recomputes the V-measure of the
(label, cluster) pairs it draws, it does not refit k-means. Refitting would cost a k-means per
resample and model (1,000 x 3 inits), and duplicated points pull centroids, so the refit would
not measure the clustering the model produced. The interval therefore covers which items were
evaluated, not k-means' own initialisation noise (seeds of the whole run cover that).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from jaxtyping import Float, Int

Item = list | np.ndarray | Mapping[str, Any]  # per-item values, or {"statistic": name, columns}
Counts = Int[np.ndarray, "resamples items"]


def statistic(name: str, **columns: np.ndarray) -> dict[str, Any]:
    """A whole-set metric's evidence: the statistic's name and its per-item columns."""
    if name not in STATISTICS:
        raise ValueError(f"unknown statistic {name!r}; known: {sorted(STATISTICS)}")
    return {"statistic": name, **columns}


def size(item: Item) -> int:
    """The number of evaluation items behind `item`."""
    if isinstance(item, Mapping):
        return len(next(v for k, v in item.items() if k != "statistic"))
    return len(item)


def value(item: Item) -> float:
    """The metric on all items (what `evaluate` reports)."""
    if isinstance(item, Mapping):
        return float(resampled(item, np.ones((1, size(item)), np.int64))[0])
    return float(np.mean(item))


def resampled(item: Item, counts: Counts) -> Float[np.ndarray, " resamples"]:
    """The metric on each resample (`counts[r, i]`: draws of item `i` in resample `r`)."""
    if not isinstance(item, Mapping):
        return counts @ np.asarray(item, np.float64) / counts.shape[1]
    columns = {k: np.asarray(v) for k, v in item.items() if k != "statistic"}
    return STATISTICS[item["statistic"]](columns, counts)


def _xlogy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x * np.log(np.where(x > 0, y, 1.0)), 0.0)


def _first_seen(values: np.ndarray) -> np.ndarray:
    """Codes 0, 1, ... in order of first occurrence: two models with the same partition under
    other cluster ids get the same codes, so their V-measures agree bit for bit (the contingency
    sums run in one order)."""
    _, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    return np.argsort(np.argsort(first))[inverse]


def _v_measure(columns: dict[str, np.ndarray], counts: Counts) -> np.ndarray:
    """sklearn's `v_measure_score` (beta 1) from each resample's weighted contingency table,
    vectorised over resamples (the demo bootstraps every clustering task of a suite).

    Homogeneity is `1 - H(C|K) / H(C)`, with `H(C|K)` from count ratios `n_lk / n_k`, so a
    perfect clustering scores exactly 1 (the ratios are exactly 1, their logarithms 0)."""
    labels, clusters = _first_seen(columns["labels"]), _first_seen(columns["clusters"])
    n_k = clusters.max() + 1
    cells = labels * n_k + clusters
    n_cells = (labels.max() + 1) * n_k
    total = counts.shape[1]
    out = np.empty(len(counts))
    block = max(1, 2**22 // n_cells)  # resamples per contingency block: memory stays bounded
    for start in range(0, len(counts), block):
        c = counts[start : start + block]
        offsets = np.arange(len(c))[:, None] * n_cells
        joint = np.bincount((offsets + cells).ravel(), c.ravel(), len(c) * n_cells)
        joint = joint.reshape(len(c), -1, n_k)
        by_label, by_cluster = joint.sum(2, keepdims=True), joint.sum(1, keepdims=True)
        h_c = -_xlogy(by_label, by_label / total).sum((1, 2)) / total
        h_k = -_xlogy(by_cluster, by_cluster / total).sum((1, 2)) / total
        h_c_given_k = -_xlogy(joint, joint / np.maximum(by_cluster, 1)).sum((1, 2)) / total
        h_k_given_c = -_xlogy(joint, joint / np.maximum(by_label, 1)).sum((1, 2)) / total
        h = np.where(h_c > 0, 1 - h_c_given_k / np.where(h_c > 0, h_c, 1.0), 1.0)
        k = np.where(h_k > 0, 1 - h_k_given_c / np.where(h_k > 0, h_k, 1.0), 1.0)
        v = 2 * h * k / np.where(h + k > 0, h + k, 1.0)
        out[start : start + block] = np.where(h + k > 0, v, 0.0)
    return out


def _by_index(fn: Callable[..., float]) -> Callable[[dict[str, np.ndarray], Counts], np.ndarray]:
    """A statistic computed on each resample's items drawn out (`fn(**columns)`)."""

    def resampled(columns: dict[str, np.ndarray], counts: Counts) -> np.ndarray:
        positions = np.arange(counts.shape[1])
        drawn = (np.repeat(positions, row) for row in counts)
        return np.array([fn(**{k: v[i] for k, v in columns.items()}) for i in drawn], float)

    return resampled


def _average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return average_precision_score(labels, scores)


def _spearman(scores: np.ndarray, gold: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return spearmanr(scores, gold).statistic


def _macro_f1(gold: np.ndarray, predicted: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return f1_score(gold, predicted, average="macro")


STATISTICS: dict[str, Callable[[dict[str, np.ndarray], Counts], np.ndarray]] = {
    "v_measure": _v_measure,
    "ap": _by_index(_average_precision),
    "spearman": _by_index(_spearman),
    "macro_f1": _by_index(_macro_f1),
}

"""Embedding-evaluation metrics on numpy arrays, as the paper and MTEB report them.

Each function returns, per metric, the evidence the metric is computed from (`items`): the
per-item values it is the mean of, or the columns of a whole-set statistic; `items.value` gives
the metric, `summarize` all of them. Embeddings are L2-normalised, so cosine similarity is a dot
product. Retrieval is exact search in blocks of queries (memory `block x corpus`), fine for
corpora up to about 10^6.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from jaxtyping import Float, Int

from compass_jax.eval import items


def summarize(evidence: Mapping[str, items.Item]) -> dict[str, float]:
    """Each metric's value from its evidence."""
    return {name: items.value(item) for name, item in evidence.items()}


def top_k(
    queries: Float[np.ndarray, "q d"], corpus: Float[np.ndarray, "c d"], k: int, block: int = 1024
) -> tuple[Int[np.ndarray, "q k"], Float[np.ndarray, "q k"]]:
    """Indices and scores of the `k` most similar corpus rows per query, best first."""
    k = min(k, len(corpus))
    indices = np.empty((len(queries), k), np.int64)
    scores = np.empty((len(queries), k), np.float32)
    for start in range(0, len(queries), block):
        sim = queries[start : start + block] @ corpus.T
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        part_scores = np.take_along_axis(sim, part, 1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        indices[start : start + block] = np.take_along_axis(part, order, 1)
        scores[start : start + block] = np.take_along_axis(part_scores, order, 1)
    return indices, scores


def retrieval(
    queries: Float[np.ndarray, "q d"],
    corpus: Float[np.ndarray, "c d"],
    relevant: Sequence[set[int]],
    ks: Sequence[int] = (1, 10, 100),
) -> dict[str, Float[np.ndarray, " q"]]:
    """Per query: nDCG@10, reciprocal rank of the first hit in the top 10 (0 without one) and
    Recall@k, with binary relevance (`relevant[i]`: corpus rows for query `i`). Each metric is
    the mean over queries."""
    ranked, _ = top_k(queries, corpus, max(max(ks), 10))
    hits = np.array(
        [[doc in rel for doc in row] for row, rel in zip(ranked, relevant, strict=True)]
    )
    n_rel = np.array([len(rel) for rel in relevant])
    discounts = 1.0 / np.log2(np.arange(2, 12))
    dcg = (hits[:, :10] * discounts[: hits[:, :10].shape[1]]).sum(1)
    ideal = np.array([discounts[: min(n, 10)].sum() for n in n_rel])
    first = np.where(hits[:, :10].any(1), hits[:, :10].argmax(1) + 1, np.inf)
    out = {"ndcg@10": dcg / np.maximum(ideal, 1e-12), "mrr@10": 1.0 / first}
    for k in ks:
        out[f"recall@{k}"] = hits[:, :k].sum(1) / np.maximum(n_rel, 1)
    return out


def classification(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    knn: int = 5,
    seed: int = 0,
) -> dict[str, items.Item]:
    """Logistic regression (MTEB's protocol) and cosine kNN on frozen embeddings: per test
    item, whether each classifier is right (accuracy is their mean), and the gold and predicted
    labels macro-F1 is computed from.

    The regression sees features standardised on the training split: contrastive embeddings
    sit in a narrow cone (pairwise cosines of 0.7-0.9 for E5), where the default L2 penalty on
    raw coordinates leaves the classifier predicting the class prior on small training sets."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    predicted = clf.fit(train_x, train_y).predict(test_x)
    neighbours, _ = top_k(test_x, train_x, knn)
    votes = train_y[neighbours]
    knn_pred = np.array([np.bincount(v).argmax() for v in votes])
    return {
        "accuracy": (predicted == test_y).astype(np.int8),
        "macro_f1": items.statistic("macro_f1", gold=test_y, predicted=predicted),
        "knn_accuracy": (knn_pred == test_y).astype(np.int8),
        "knn_macro_f1": items.statistic("macro_f1", gold=test_y, predicted=knn_pred),
    }


def clustering(x: np.ndarray, labels: np.ndarray, *, seed: int = 0) -> dict[str, items.Item]:
    """V-measure of k-means with k = the number of true clusters (evidence: the labels and
    the fitted clusters, `items`)."""
    from sklearn.cluster import KMeans

    labels = np.unique(labels, return_inverse=True)[1]
    k = labels.max() + 1
    predicted = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(x)
    return {"v_measure": items.statistic("v_measure", labels=labels, clusters=predicted)}


def pair_classification(a: np.ndarray, b: np.ndarray, labels: np.ndarray) -> dict[str, items.Item]:
    """Average precision of cosine similarity for telling positive pairs from negative."""
    cosine = np.sum(a * b, axis=1, dtype=np.float64)
    return {"ap": items.statistic("ap", scores=cosine, labels=np.asarray(labels))}


def sts(a: np.ndarray, b: np.ndarray, gold: np.ndarray) -> dict[str, items.Item]:
    """Spearman correlation between cosine similarity and gold scores."""
    cosine = np.sum(a * b, axis=1, dtype=np.float64)
    return {"spearman": items.statistic("spearman", scores=cosine, gold=np.asarray(gold))}


def bitext(source: np.ndarray, target: np.ndarray) -> dict[str, Float[np.ndarray, " p"]]:
    """Bitext mining: row i of `source` translates row i of `target`. Per pair: whether each
    side finds the other as its nearest neighbour (forward, backward) and their mean; accuracy
    is the mean over pairs."""
    forward = (top_k(source, target, 1)[0][:, 0] == np.arange(len(source))).astype(np.int8)
    backward = (top_k(target, source, 1)[0][:, 0] == np.arange(len(target))).astype(np.int8)
    return {
        "accuracy": (forward + backward) / 2,
        "accuracy_forward": forward,
        "accuracy_backward": backward,
    }

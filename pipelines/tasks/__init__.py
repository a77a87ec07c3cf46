"""Training tasks built from a catalog: each has an instruction (the query-side prompt of
instruction-following embedders) and writes records `{uid, task, lang, query, positive,
negatives, negative_labels, label, label_path, positive_label, group_id, split, source,
doc_id}`. `positive_label` is the class of the positive's product (at `tasks.category_level`)
whatever the task: a record that mines this positive as a negative gets it in `negative_labels`."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    instruction: str
    labelled: bool  # records carry a class id, so CAM masks same-class in-batch candidates


TASKS = {
    t.name: t
    for t in (
        Task(
            "query_product",
            "Given a shopper's search query, retrieve the product listing that matches it",
            labelled=False,
        ),
        Task(
            "synthetic_query",
            "Given a shopper's search query, retrieve the product listing that matches it",
            labelled=False,
        ),
        Task(
            "title_category",
            "Classify the product title into its e-commerce category",
            labelled=True,
        ),
        Task(
            "cross_lingual",
            "Given a product title, retrieve the same product listed in another language",
            labelled=False,
        ),
        Task(
            "title_description",
            "Given a product title, retrieve the description of that product",
            labelled=False,
        ),
        Task(
            "clustering", "Identify product titles that belong to the same category", labelled=True
        ),
    )
}


def record(
    task: str,
    uid: str,
    lang: str,
    query: str,
    positive: str,
    *,
    group_id: str,
    split: str,
    source: str = "catalog",
    label: int = -1,
    label_path: tuple[int, ...] = (),
    positive_label: int = -1,
    doc_id: str = "",
) -> dict:
    return {
        "uid": uid,
        "task": task,
        "lang": lang,
        "query": query,
        "positive": positive,
        "negatives": [],
        "negative_labels": [],
        "label": label,
        "label_path": list(label_path),
        "positive_label": positive_label,
        "group_id": group_id,
        "split": split,
        "source": source,
        "doc_id": doc_id,
    }

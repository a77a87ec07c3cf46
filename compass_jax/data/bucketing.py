"""Tokenisation with length bucketing: each batch is padded to the smallest bucket that holds
its longest text, not to the configured maximum, so short e-commerce queries do not pay for
512-token padding. Buckets are a handful of fixed lengths, so a jitted step compiles once per
(task, query bucket, document bucket), not once per batch.

In multi-process training every process must pick the same bucket: pass the whole global
batch as `global_records` (every process reads it; `MixtureReader.last_global_rows`) and each
process pads its own rows to the bucket of the global longest text.
"""

from __future__ import annotations

from collections.abc import Sequence

from compass_jax.data.batch import TrainBatch
from compass_jax.data.pairs import PairRecord, tokenize_batch


def length_buckets(max_length: int, smallest: int = 16) -> tuple[int, ...]:
    """Powers of two from `smallest` below `max_length`, then `max_length` itself."""
    out, length = [], smallest
    while length < max_length:
        out.append(length)
        length *= 2
    return (*out, max_length)


def pick_bucket(longest: int, buckets: Sequence[int]) -> int:
    return next((b for b in sorted(buckets) if b >= longest), max(buckets))


def _longest(tokenizer, texts: list[str], limit: int) -> int:
    if not texts:
        return 1
    ids = tokenizer(texts, truncation=True, max_length=limit)["input_ids"]
    return max(len(x) for x in ids)


def tokenize_bucketed(
    records: Sequence[PairRecord],
    tokenizer,
    *,
    query_prefix: str,
    document_prefix: str,
    query_length: int,
    document_length: int,
    num_negatives: int,
    global_records: Sequence[PairRecord] | None = None,
    query_buckets: Sequence[int] | None = None,
    document_buckets: Sequence[int] | None = None,
) -> TrainBatch:
    """`tokenize_batch` with query/document lengths cut down to the batch's bucket."""
    scope = list(global_records) if global_records is not None else list(records)
    queries = [query_prefix + r.query for r in scope]
    documents = [document_prefix + r.positive for r in scope]
    documents += [document_prefix + n for r in scope for n in r.negatives[:num_negatives] if n]
    q_len = pick_bucket(
        _longest(tokenizer, queries, query_length), query_buckets or length_buckets(query_length)
    )
    d_len = pick_bucket(
        _longest(tokenizer, documents, document_length),
        document_buckets or length_buckets(document_length),
    )
    return tokenize_batch(
        records,
        tokenizer,
        query_prefix=query_prefix,
        document_prefix=document_prefix,
        query_length=min(q_len, query_length),
        document_length=min(d_len, document_length),
        num_negatives=num_negatives,
    )

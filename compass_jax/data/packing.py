"""Token sequences -> fixed-shape batches with almost no padding, by packing several texts into
each row.

A batch is `token_ids[r, l]` with a parallel `segment_ids[r, l]` (0: padding, k: the k-th text
of its row) and `texts[r, s]`, the input index of each row's k-th text (-1: none). The encoders
attend only within a segment and restart positions at each one, and pooling reads one vector per
segment (`embedding.embed_segments`), so a packed text embeds exactly as it does alone.

Shapes come from a small fixed set (`Layout.shapes`), so XLA compiles a handful of programs:
row lengths from `Layout.lengths`, `tokens // length` rows per batch (a token budget: more rows
when rows are short), the last batch of each length cut to a power of two rows, and
`length // min_segment` segments per row. `Layout(pack=False)` is plain length bucketing (one
text per row), the same batches without packing.

`pack` streams batches for inference (`Encoder.encode`); `pack_fixed` puts a training batch's
texts into one batch of a fixed shape, and `PackedBatch.index` gathers the per-segment vectors
back into input order.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Layout:
    """How texts are laid out in batches.

    lengths: allowed row lengths, ascending; a text that fits in no open row opens a row of the
        smallest length that holds it (the last is the longest text allowed).
    tokens: tokens per batch: `max(1, tokens // length)` rows (unless `rows` is set).
    rows: a fixed number of rows per batch instead of the token budget.
    pack: several texts per row (best-fit decreasing); False: one text per row.
    min_segment: a row holds at most `length // min_segment` texts (the pooling shape).
    """

    lengths: tuple[int, ...]
    tokens: int = 4096
    rows: int | None = None
    pack: bool = True
    min_segment: int = 4

    def __post_init__(self):
        if not self.lengths or list(self.lengths) != sorted(set(self.lengths)):
            raise ValueError(f"lengths must be ascending and distinct, got {self.lengths}")
        if self.lengths[0] < 1 or self.tokens < 1 or (self.rows is not None and self.rows < 1):
            raise ValueError("lengths, tokens and rows must be positive")

    @classmethod
    def for_max_length(
        cls, max_length: int, *, pack: bool = True, smallest: int = 128, **kw
    ) -> Layout:
        """Powers of two from `smallest` below `max_length`, then `max_length`."""
        lengths, length = [], smallest
        while length < max_length:
            lengths.append(length)
            length *= 2
        return cls((*lengths, max_length), pack=pack, **kw)

    def batch_rows(self, length: int) -> int:
        return self.rows if self.rows is not None else max(1, self.tokens // length)

    def segments(self, length: int) -> int:
        return max(1, length // self.min_segment) if self.pack else 1

    def row_counts(self, length: int) -> tuple[int, ...]:
        """Rows a batch of `length` may have: the full count, and for the last batch the powers
        of two below it (at most half its rows empty, and few programs to compile for the
        small inputs of an evaluation task)."""
        full = self.batch_rows(length)
        return (*(2**k for k in range(full.bit_length()) if 2**k < full), full)

    def shapes(self) -> list[tuple[int, int, int]]:
        """Every `(rows, length, segments)` a batch can have."""
        return [
            (rows, length, self.segments(length))
            for length in self.lengths
            for rows in self.row_counts(length)
        ]


@dataclasses.dataclass(frozen=True)
class PackedBatch:
    token_ids: np.ndarray  # [r, l] int32
    segment_ids: np.ndarray  # [r, l] int32: 0 padding, k the row's k-th text
    texts: np.ndarray  # [r, s] int64: input index of the row's (k+1)-th text, -1 none

    @property
    def real_tokens(self) -> int:
        return int(np.count_nonzero(self.segment_ids))

    def index(self, count: int) -> np.ndarray:
        """`[count]`: where each of `count` input texts sits in this batch's embeddings
        flattened to `[r * s]` (-1: not in this batch), so that
        `embed_segments(...).reshape(r * s, e)[index]` lists them in input order."""
        out = np.full(count, -1, np.int64)
        held = self.texts >= 0
        out[self.texts[held]] = np.flatnonzero(held)
        return out


def assign_rows(lengths: Sequence[int], layout: Layout) -> list[tuple[int, list[int]]]:
    """`(row length, text indices)` of every row: best-fit decreasing, each text (longest first)
    into the open row with the least room that holds it, else a new row of the smallest length
    that holds it. Texts without tokens are in no row."""
    longest = layout.lengths[-1]
    by_room: list[list[int]] = [[] for _ in range(longest + 1)]  # room -> open rows
    has_room = np.zeros(longest + 1, bool)
    rows: list[tuple[int, list[int]]] = []
    for i in np.argsort(-np.asarray(lengths), kind="stable"):
        n = int(lengths[i])
        if n > longest:
            raise ValueError(f"text {i}: {n} tokens, rows hold at most {longest}")
        if n == 0:
            continue
        fits = np.flatnonzero(has_room[n:]) if layout.pack else ()
        if len(fits):
            room = n + int(fits[0])
            row = by_room[room].pop()
            has_room[room] = bool(by_room[room])
        else:
            length = next(x for x in layout.lengths if x >= n)
            row, room = len(rows), length
            rows.append((length, []))
        length, members = rows[row]
        members.append(int(i))
        room -= n
        if layout.pack and room and len(members) < layout.segments(length):
            by_room[room].append(row)
            has_room[room] = True
    return rows


def pack(
    token_ids: Sequence[Sequence[int]], layout: Layout, *, pad_id: int
) -> Iterator[PackedBatch]:
    """Batches holding every text of `token_ids` with tokens once, longest rows first."""
    by_length: dict[int, list[list[int]]] = {}
    for length, members in assign_rows([len(t) for t in token_ids], layout):
        by_length.setdefault(length, []).append(members)
    for length in sorted(by_length, reverse=True):
        rows, counts = by_length[length], layout.row_counts(length)
        for start in range(0, len(rows), counts[-1]):
            group = rows[start : start + counts[-1]]
            count = next(c for c in counts if c >= len(group))
            yield _fill(token_ids, group, count, length, layout.segments(length), pad_id)


def pack_fixed(token_ids: Sequence[Sequence[int]], layout: Layout, *, pad_id: int) -> PackedBatch:
    """Every text in one batch of exactly `layout.batch_rows(length)` rows of the layout's
    longest `length`: the fixed shape a training step (or a GradCache chunk) needs. ValueError
    when the texts need more rows."""
    length = layout.lengths[-1]
    one_length = dataclasses.replace(layout, lengths=(length,))
    rows = [members for _, members in assign_rows([len(t) for t in token_ids], one_length)]
    count = layout.batch_rows(length)
    if len(rows) > count:
        raise ValueError(f"the texts need {len(rows)} rows of {length} tokens, a batch has {count}")
    return _fill(token_ids, rows, count, length, layout.segments(length), pad_id)


def _fill(token_ids, group, count: int, length: int, segments: int, pad_id: int) -> PackedBatch:
    texts = np.full((count, segments), -1, np.int64)
    for r, members in enumerate(group):
        texts[r, : len(members)] = members
    order = texts[texts >= 0]  # row-major: row by row, each row's texts in order
    sizes = np.array([len(token_ids[t]) for t in order], np.int64)
    row = np.repeat(np.nonzero(texts >= 0)[0], sizes)
    # Column of each token: its index in the flat stream minus where its row starts.
    flat = np.arange(sizes.sum())
    row_start = np.searchsorted(row, np.arange(count))
    column = flat - row_start[row]
    ids = np.full((count, length), pad_id, np.int32)
    seg = np.zeros((count, length), np.int32)
    ids[row, column] = np.fromiter(itertools.chain.from_iterable(token_ids[t] for t in order),
                                   np.int32, len(flat))  # fmt: skip
    seg[row, column] = np.repeat(np.nonzero(texts >= 0)[1] + 1, sizes)
    return PackedBatch(ids, seg, texts)


def padding_efficiency(batches: Sequence[PackedBatch]) -> float:
    """Real tokens over computed tokens (rows x length) of `batches`."""
    computed = sum(b.token_ids.size for b in batches)
    return sum(b.real_tokens for b in batches) / max(computed, 1)

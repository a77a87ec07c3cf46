"""InfoNCE with Class-Aware Masking (CAM) over the global batch, in two forms.

* `cam_infonce` — the reference: builds the full `[b, c]` score matrix. Small batches, tests.
* `cam_infonce_tiled` — the same loss from row blocks against column blocks of candidates with
  an online logsumexp under `jax.checkpoint`, so peak memory is one `[rows, cols]` tile rather
  than `b x b(1+g)`. `cam_infonce_sharded` runs it under `shard_map`: each device keeps its own
  anchor rows and all-gathers the candidates together with their labels and text hashes, so
  the masks see the global batch (a per-device mask would silently miss cross-device pairs).

For query `i` the candidates are every in-batch positive, every hard negative (`g` slots per
example) and, optionally, every other query. Candidate `c` is removed from `i`'s denominator
(never the true positive) when
  - class:     `i` and `c`'s owner are different examples with the same label (>= 0): another
               example's positive or hard negative of `i`'s class (a hard negative carries its own
               label); `i`'s own hard negatives stay, whatever their label;
  - duplicate: `c`'s text hash equals the hash of `i`'s positive;
  - margin:    `s(i, c) > s(i, +) + margin`, when a margin is set (likely false negatives).
The optional symmetric term scores each positive against all queries with the same masks.

Masked shares (step metrics): of the considered pairs (each anchor against every valid in-batch
negative: other examples' positives, every hard negative, other queries with `query_query`; the
true positive never counts), `masked_class`, `masked_duplicate` and `masked_margin` are the shares
each kind removes, counted separately (a pair removed for two reasons counts under both), and
`masked_any` the share removed for any reason (each pair once); `masked_total` is its count.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec
from jaxtyping import Array, Bool, Float, Int

from compass_jax.configio import Positive


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ContrastiveBatch:
    """Embeddings and CAM metadata of a global batch (`g` hard-negative slots per example; an
    empty slot has `negative_valid` False)."""

    query: Float[Array, "b d"]
    positive: Float[Array, "b d"]
    negatives: Float[Array, "b g d"]
    negative_valid: Bool[Array, "b g"]
    label: Int[Array, " b"]
    negative_label: Int[Array, "b g"]
    query_hash: Int[Array, " b"]
    positive_hash: Int[Array, " b"]
    negative_hash: Int[Array, "b g"]


@dataclasses.dataclass(frozen=True)
class LossSettings:
    """Per-task loss settings (hashable: a static argument of the jitted step)."""

    temperature: Positive = 0.02
    class_mask: bool = True
    duplicate_mask: bool = True
    margin: float | None = None
    query_query: bool = False
    symmetric: bool = False


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class _Candidates:
    """Flattened candidate set; `owner` is the example a candidate belongs to."""

    emb: Float[Array, "c d"]
    owner: Int[Array, " c"]
    label: Int[Array, " c"]
    hash: Int[Array, " c"]
    valid: Bool[Array, " c"]
    is_query: Bool[Array, " c"]  # query-query candidates: the anchor's own query is excluded


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class _Anchors:
    emb: Float[Array, "r d"]
    index: Int[Array, " r"]  # global example index
    label: Int[Array, " r"]
    positive_hash: Int[Array, " r"]
    positive_emb: Float[Array, "r d"]


def _query_to_doc(batch: ContrastiveBatch, settings: LossSettings) -> _Candidates:
    b, g = batch.negative_valid.shape
    idx = jnp.arange(b, dtype=jnp.int32)
    parts = [
        (batch.positive, idx, batch.label, batch.positive_hash, jnp.ones(b, bool), False),
        (
            batch.negatives.reshape(b * g, batch.query.shape[-1]),
            jnp.repeat(idx, g),
            batch.negative_label.reshape(-1),
            batch.negative_hash.reshape(-1),
            batch.negative_valid.reshape(-1),
            False,
        ),
    ]
    if settings.query_query:
        parts.append((batch.query, idx, batch.label, batch.query_hash, jnp.ones(b, bool), True))
    return _Candidates(
        emb=jnp.concatenate([p[0] for p in parts]),
        owner=jnp.concatenate([p[1] for p in parts]),
        label=jnp.concatenate([p[2] for p in parts]),
        hash=jnp.concatenate([p[3] for p in parts]),
        valid=jnp.concatenate([p[4] for p in parts]),
        is_query=jnp.concatenate([jnp.full(len(p[1]), p[5]) for p in parts]),
    )


def _doc_to_query(batch: ContrastiveBatch) -> _Candidates:
    b = batch.label.shape[0]
    return _Candidates(
        emb=batch.query,
        owner=jnp.arange(b, dtype=jnp.int32),
        label=batch.label,
        hash=batch.query_hash,
        valid=jnp.ones(b, bool),
        is_query=jnp.zeros(b, bool),
    )


def _anchors(emb, positive_emb, label, positive_hash, offset=0) -> _Anchors:
    index = offset + jnp.arange(emb.shape[0], dtype=jnp.int32)
    return _Anchors(emb, index, label, positive_hash, positive_emb)


def _tile(anchors: _Anchors, cands: _Candidates, positive_score, settings: LossSettings):
    """Scores and masks of one `[r, c]` tile; the true positive is handled by the caller."""
    scores = jnp.einsum("rd,cd->rc", anchors.emb, cands.emb, preferred_element_type=jnp.float32)
    own = cands.owner[None, :] == anchors.index[:, None]
    # The caller excludes the true positive (`is_positive`); here only the anchor's own query
    # (query-query term) and padded negatives leave the candidate set.
    considered = cands.valid[None, :] & ~(own & cands.is_query[None, :])
    same_class = (anchors.label[:, None] >= 0) & (cands.label[None, :] == anchors.label[:, None])
    class_hit = considered & ~own & same_class if settings.class_mask else jnp.zeros_like(own)
    dup_hit = (
        considered & (cands.hash[None, :] == anchors.positive_hash[:, None])
        if settings.duplicate_mask
        else jnp.zeros_like(own)
    )
    margin_hit = (
        considered & (scores > positive_score[:, None] + settings.margin)
        if settings.margin is not None
        else jnp.zeros_like(own)
    )
    return scores, considered, class_hit, dup_hit, margin_hit


def _stats_zero(r):
    f = jnp.zeros(r, jnp.float32)
    return {"neg_sum": f, "neg_count": f, "class": f, "duplicate": f, "margin": f, "considered": f}


def _block_stats(anchors, cands, is_positive, positive_score, settings):
    """Per-row partial sums for one tile: max and sum-exp of kept negatives, plus counts."""
    scores, considered, class_hit, dup_hit, margin_hit = _tile(
        anchors, cands, positive_score, settings
    )
    negative = considered & ~is_positive
    keep = negative & ~(class_hit | dup_hit | margin_hit)
    logits = jnp.where(keep, scores / settings.temperature, -jnp.inf)
    f32 = lambda x: x.astype(jnp.float32)
    stats = {
        "neg_sum": jnp.sum(jnp.where(keep, scores, 0.0), 1),
        "neg_count": f32(keep).sum(1),
        "class": f32(class_hit & negative).sum(1),
        "duplicate": f32(dup_hit & negative).sum(1),
        "margin": f32(margin_hit & negative).sum(1),
        "considered": f32(negative).sum(1),
    }
    return logits, stats


def _direction(anchors: _Anchors, cands: _Candidates, positive_col, settings, block):
    """Loss terms and metric sums of one direction. `positive_col[i]` is the candidate index of
    anchor `i`'s true positive. `block` = (rows, cols) tiles, or None for the full matrix."""
    positive_score = jnp.sum(anchors.emb * anchors.positive_emb, -1, dtype=jnp.float32)
    positive_logit = positive_score / settings.temperature
    if block is None:
        is_positive = jnp.arange(cands.owner.shape[0])[None, :] == positive_col[:, None]
        logits, stats = _block_stats(anchors, cands, is_positive, positive_score, settings)
        # The positive's column keeps every row finite (a fully masked row would be NaN).
        lse = jax.nn.logsumexp(jnp.concatenate([positive_logit[:, None], logits], 1), axis=1)
        best = jnp.max(logits, axis=1)
    else:
        lse, best, stats = _online(anchors, cands, positive_col, positive_score, settings, block)
    sums = {
        "loss": jnp.sum(lse - positive_logit),
        "top1": jnp.sum((positive_logit >= best).astype(jnp.float32)),
        "pos_sim": jnp.sum(positive_score),
        **{k: jnp.sum(v) for k, v in stats.items()},
    }
    return sums


def _online(anchors, cands, positive_col, positive_score, settings, block):
    """Row blocks x column blocks with a running (max, sum-exp); each row block is rematerialised
    in the backward pass so only one tile of scores is ever live."""
    rows, cols = block
    r, c = anchors.index.shape[0], cands.owner.shape[0]
    if r % rows or c % cols:
        raise ValueError(f"tiles ({rows}, {cols}) must divide the [{r}, {c}] score matrix")
    split = lambda x, n: x.reshape(x.shape[0] // n, n, *x.shape[1:])
    cand_blocks = jax.tree.map(lambda x: split(x, cols), cands)
    col_starts = jnp.arange(0, c, cols)

    @jax.checkpoint
    def row_block(args):
        anc, pos_col, pos_score = args
        pos_logit = pos_score / settings.temperature

        def step(carry, xs):
            running_max, running_sum, stats = carry
            cand, start = xs
            is_positive = (start + jnp.arange(cols))[None, :] == pos_col[:, None]
            logits, block_stats = _block_stats(anc, cand, is_positive, pos_score, settings)
            # The shift cancels in value and gradient; no need to differentiate through it.
            new_max = jax.lax.stop_gradient(jnp.maximum(running_max, jnp.max(logits, axis=1)))
            running_sum = running_sum * jnp.exp(running_max - new_max) + jnp.sum(
                jnp.exp(logits - new_max[:, None]), axis=1
            )
            stats = jax.tree.map(jnp.add, stats, block_stats)
            return (new_max, running_sum, stats), None

        # Start from the positive: the running max is then always finite, even when a whole
        # column block is masked.
        shift = jax.lax.stop_gradient(pos_logit)
        init = (shift, jnp.exp(pos_logit - shift), _stats_zero(pos_logit.shape[0]))
        (m, s, stats), _ = jax.lax.scan(step, init, (cand_blocks, col_starts))
        lse = m + jnp.log(s)
        # top-1: the positive wins iff its logit is the running max over all kept candidates.
        return lse, m, stats

    anchor_blocks = (jax.tree.map(lambda x: split(x, rows), anchors), split(positive_col, rows),
                     split(positive_score, rows))  # fmt: skip
    lse, best, stats = jax.lax.map(row_block, anchor_blocks)
    return lse.reshape(-1), best.reshape(-1), jax.tree.map(lambda x: x.reshape(-1), stats)


def _loss_sums(batch, settings, block, offset, local, full) -> dict[str, jax.Array]:
    """Metric sums for the anchors in `local` (rows `offset...` of the global batch) against the
    candidates of the global batch `full`."""
    anchors = _anchors(local.query, local.positive, local.label, local.positive_hash, offset)
    sums = _direction(anchors, _query_to_doc(full, settings), anchors.index, settings, block)
    if settings.symmetric:
        rev = _anchors(local.positive, local.query, local.label, local.query_hash, offset)
        back = _direction(rev, _doc_to_query(full), rev.index, settings, block)
        sums["loss"] = (sums["loss"] + back["loss"]) / 2
    return sums


def _finish(sums: dict[str, jax.Array], b: int) -> tuple[jax.Array, dict[str, jax.Array]]:
    considered = jnp.maximum(sums["considered"], 1.0)
    metrics = {
        "loss": sums["loss"] / b,
        "top1": sums["top1"] / b,
        "pos_sim": sums["pos_sim"] / b,
        "neg_sim": sums["neg_sum"] / jnp.maximum(sums["neg_count"], 1.0),
        "masked_class": sums["class"] / considered,
        "masked_duplicate": sums["duplicate"] / considered,
        "masked_margin": sums["margin"] / considered,
        "masked_any": (sums["considered"] - sums["neg_count"]) / considered,
        "masked_total": sums["considered"] - sums["neg_count"],
    }
    return metrics["loss"], metrics


def cam_infonce(
    batch: ContrastiveBatch, settings: LossSettings
) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
    """Reference CAM-InfoNCE on full arrays: `(mean loss, metrics)`."""
    b = batch.label.shape[0]
    return _finish(_loss_sums(batch, settings, None, 0, batch, batch), b)


def cam_infonce_tiled(
    batch: ContrastiveBatch, settings: LossSettings, *, block: tuple[int, int] = (128, 1024)
) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
    """Tiled CAM-InfoNCE on one device; `block` = (rows, cols), clipped to the batch."""
    b = batch.label.shape[0]
    block = _fit_block(block, b, _num_candidates(batch, settings))
    return _finish(_loss_sums(batch, settings, block, 0, batch, batch), b)


def _num_candidates(batch: ContrastiveBatch, settings: LossSettings) -> int:
    b, g = batch.negative_valid.shape
    return b * (1 + g + int(settings.query_query))


def _fit_block(block, rows, cols):
    """The largest tile no bigger than `block` that divides the matrix."""
    fit = lambda want, n: max(d for d in range(1, min(want, n) + 1) if n % d == 0)
    return fit(block[0], rows), fit(block[1], cols)


def cam_infonce_sharded(
    batch: ContrastiveBatch,
    settings: LossSettings,
    mesh: Mesh,
    *,
    axes: tuple[str, ...] = ("data", "fsdp"),
    block: tuple[int, int] = (128, 1024),
) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
    """Tiled CAM-InfoNCE with the batch split over `axes` of `mesh`: local anchor rows against
    the all-gathered candidates (embeddings, labels and hashes travel together)."""
    b = batch.label.shape[0]
    spec = PartitionSpec(axes)

    def local_loss(local: ContrastiveBatch):
        full = jax.tree.map(lambda x: jax.lax.all_gather(x, axes, tiled=True), local)
        rows = local.label.shape[0]
        offset = jax.lax.axis_index(axes) * rows
        fitted = _fit_block(block, rows, _num_candidates(full, settings))
        sums = _loss_sums(full, settings, fitted, offset, local, full)
        return jax.tree.map(lambda x: jax.lax.psum(x, axes), sums)

    sums = jax.shard_map(
        local_loss, mesh=mesh, in_specs=(jax.tree.map(lambda _: spec, batch),),
        out_specs=PartitionSpec(), check_vma=False,
    )(batch)  # fmt: skip
    return _finish(sums, b)

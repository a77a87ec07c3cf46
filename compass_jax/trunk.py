"""Locked-trunk training (LiT's frozen lower tower): the trunk's states computed once per text.

When `optim.frozen` freezes exactly the embeddings and layers `0..k-1` (and nothing else), those
layers compute the same states for a text at every step: `depth` detects that trunk from the
rules, `Trunk` computes each text's states once (batched, jitted, no dropout: frozen layers run
deterministically) and keeps them in a byte-bounded LRU, and the step runs only layers `k..`
from them (`embedding.embed_segments(..., trunk=k)`). Any other frozen set trains as before.

A text's trunk states depend only on its token ids (attention is block-diagonal by segment and
positions restart per segment), so the cache is per text, at its own unpadded length, keyed by
its token ids and a fingerprint of the frozen params, model config and depth: changing either
recomputes. `assemble` lays cached texts out as a tower (one text per row with an attention
mask, or several per row with segment ids, `compass_jax.data.packing`). The cache is derived
data: a resumed run recomputes it and takes the same steps.

Size: a text of n tokens holds `n * d` values in the compute dtype (`d` = 384 for
multilingual-e5-small: 768 bytes a token in bfloat16, 1,536 in float32; a 32-token text 24 or
48 KiB).
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jaxtyping import Float, Int

from compass_jax import models, optim, tree
from compass_jax.config import ModelConfig

# Rows of one trunk call; calls take 1, 2, 4, ... `MAX_ROWS` rows and lengths of powers of two
# (from `MIN_LENGTH`), so a run compiles a handful of trunk programs.
MAX_ROWS = 64
MIN_LENGTH = 8


def depth(cfg: ModelConfig, rules: optim.OptimConfig) -> int | None:
    """k when `rules.frozen` freezes exactly the embeddings and layers `0..k-1` (k >= 1) of
    `cfg`'s model; None for any other frozen set (a frozen embedding table alone saves too little
    to be worth a cache of `l x d` states a text)."""
    paths = set(tree.flatten(models.abstract_params(cfg)))
    frozen = {p for p in paths if optim.is_frozen(rules, p)}
    if frozen == paths:  # nothing left to train (`optim.split_trainable` says so)
        return None
    for k in range(1, cfg.num_layers + 1):
        if frozen == models.trunk_paths(cfg, k):
            return k
    return None


def host_params(params) -> dict[str, np.ndarray]:
    """Flat host copies of (possibly sharded, multi-process) arrays."""
    gather = lambda x: (
        np.asarray(jax.device_get(x))
        if not isinstance(x, jax.Array) or x.is_fully_addressable
        else np.asarray(multihost_utils.process_allgather(x, tiled=True))
    )
    return {p: gather(v) for p, v in tree.flatten(params).items()}


def fingerprint(cfg: ModelConfig, k: int, frozen: Mapping[str, np.ndarray]) -> bytes:
    """A digest of everything the trunk's states depend on besides the token ids: the model
    config (arch, widths, compute dtype), the depth and the frozen params' values."""
    digest = hashlib.blake2b(repr((cfg, k)).encode(), digest_size=16)
    for path in sorted(frozen):
        value = np.ascontiguousarray(frozen[path])
        digest.update(f"{path}:{value.dtype}:{value.shape}".encode())
        digest.update(value.view(np.uint8).reshape(-1))
    return digest.digest()


def texts(
    ids: Int[np.ndarray, "r l"], segment_ids: Int[np.ndarray, "r l"]
) -> list[Int[np.ndarray, " n"]]:
    """The token ids of every text of a tower, row by row and segment by segment (1, 2, ...)."""
    out = []
    for row_ids, row_segments in zip(ids, segment_ids, strict=True):
        for s in np.unique(row_segments[row_segments > 0]):
            out.append(row_ids[row_segments == s])
    return out


def assemble(
    states: Sequence[Float[np.ndarray, "n d"]], segment_ids: Int[np.ndarray, "r l"], *, width, dtype
) -> Float[np.ndarray, "r l d"]:
    """Per-text states (in `texts`' order) laid out as the tower of `segment_ids` (an attention
    mask is the one-text-per-row case); padding positions hold zeros (poolers ignore them)."""
    out = np.zeros((*segment_ids.shape, width), dtype)
    it = iter(states)
    for row, row_segments in enumerate(segment_ids):
        for s in np.unique(row_segments[row_segments > 0]):
            out[row, row_segments == s] = next(it)
    return out


class Cache:
    """Least-recently-used trunk states by key, bounded by their bytes."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.entries: collections.OrderedDict[bytes, np.ndarray] = collections.OrderedDict()
        self.bytes = self.hits = self.misses = 0

    def get(self, key: bytes) -> np.ndarray | None:
        value = self.entries.get(key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
            self.entries.move_to_end(key)
        return value

    def put(self, key: bytes, value: np.ndarray) -> None:
        if key in self.entries:
            return
        self.entries[key] = value
        self.bytes += value.nbytes
        while self.bytes > self.max_bytes and len(self.entries) > 1:
            self.bytes -= self.entries.popitem(last=False)[1].nbytes


_SHARED: dict[int, Cache] = {}


def shared_cache(max_bytes: int) -> Cache:
    """The process's cache of trunk states for this bound. Runs in one process (a demo's arms
    and seeds, a sweep of trainings over one base) reuse each other's states: a key carries the
    fingerprint of the frozen params, so a run never reads another trunk's states."""
    return _SHARED.setdefault(max_bytes, Cache(max_bytes))


def _bucket(n: int, smallest: int) -> int:
    return max(smallest, 1 << max(n - 1, 0).bit_length())


class Trunk:
    """The locked trunk of `k` layers of one set of frozen params, with its cache."""

    def __init__(self, cfg: ModelConfig, k: int, frozen: Mapping[str, np.ndarray], cache: Cache):
        self.cfg, self.k, self.cache = cfg, k, cache
        self.key = fingerprint(cfg, k, frozen)
        device = jax.local_devices()[0]
        self.params = jax.device_put(tree.unflatten(dict(frozen)), device)
        abstract = tree.flatten(models.abstract_params(cfg))
        missing = {p: a for p, a in abstract.items() if p not in frozen}

        def run(params, ids, segment_ids):
            # The top's params are unused by the trunk: zeros XLA drops.
            zeros = {p: jnp.zeros(a.shape, a.dtype) for p, a in missing.items()}
            full = optim.merge_trainable(tree.unflatten(zeros), params)
            return models.apply_trunk(cfg, full, ids, segment_ids, k)

        self._run = jax.jit(run)

    def _compute(self, missing: list[np.ndarray]) -> list[np.ndarray]:
        """Trunk states of `missing` texts, by length bucket in calls of bounded shape."""
        out: list[np.ndarray | None] = [None] * len(missing)
        order = sorted(range(len(missing)), key=lambda i: len(missing[i]))
        for start in range(0, len(order), MAX_ROWS):
            group = order[start : start + MAX_ROWS]
            rows = _bucket(len(group), 1)
            length = _bucket(max(len(missing[i]) for i in group), MIN_LENGTH)
            ids = np.zeros((rows, length), np.int32)
            mask = np.zeros((rows, length), np.int32)
            for row, i in enumerate(group):
                ids[row, : len(missing[i])], mask[row, : len(missing[i])] = missing[i], 1
            hidden = np.asarray(self._run(self.params, ids, mask))
            for row, i in enumerate(group):
                out[i] = hidden[row, : len(missing[i])]
        return out  # type: ignore[return-value]

    def states(
        self, towers: Mapping[str, tuple[Int[np.ndarray, "r l"], Int[np.ndarray, "r l"]]]
    ) -> dict[str, Float[np.ndarray, "r l d"]]:
        """The trunk's states of every tower `(ids, segment ids or attention mask)`, in its
        layout: cached texts from the cache, the others computed together (each once)."""
        found: dict[bytes, np.ndarray] = {}
        missing: dict[bytes, np.ndarray] = {}
        keys = {}
        for name, (ids, segment_ids) in towers.items():
            keys[name] = []
            for text in texts(np.asarray(ids), np.asarray(segment_ids)):
                key = self.key + text.astype(np.int32).tobytes()
                keys[name].append(key)
                if key in found or key in missing:
                    continue
                value = self.cache.get(key)
                if value is None:
                    missing[key] = text
                else:
                    found[key] = value
        for key, value in zip(missing, self._compute(list(missing.values())), strict=True):
            found[key] = value
            self.cache.put(key, value)
        dtype = jnp.dtype(self.cfg.dtype)
        return {
            name: assemble(
                [found[k] for k in keys[name]],
                np.asarray(towers[name][1]),
                width=self.cfg.hidden_size,
                dtype=dtype,
            )
            for name in towers
        }

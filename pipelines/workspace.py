"""The build directory: where each stage's outputs, done-markers, rejects and caches live,
and the barrier between stages.

A unit of work (one input file, one partition, or the whole build) is done when its marker
exists. Outputs are written under temporary names and renamed, and the marker last, so a unit
killed part-way is simply redone, and never leaves a duplicate or a half-written file behind.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import time
from collections.abc import Iterable, Iterator

from compass_jax.atomic import atomic_path
from compass_jax.configio import to_json
from pipelines.config import BuildConfig


def dump_jsonl(path: str, rows: Iterable[dict]) -> int:
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            n += 1
    return n


def load_jsonl(path: str) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def dump_json(path: str, value) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=False, sort_keys=True, indent=1)
        f.write("\n")


def dump_npz(path: str, **arrays) -> None:
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def load_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class Workspace:
    def __init__(self, root: str, cfg: BuildConfig):
        self.root, self.cfg = os.path.abspath(root), cfg

    # layout
    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def work(self, stage: str, name: str) -> str:
        return self.path("work", stage, name)

    def marker(self, stage: str, unit: str) -> str:
        return self.work(stage, f"{unit}.done.json")

    def rejects(self, stage: str, unit: str) -> str:
        return self.path("rejects", stage, f"{unit}.jsonl")

    @property
    def tfds_root(self) -> str:
        return self.path("tfds")

    def partition_units(self) -> list[str]:
        return [f"part-{p:05d}" for p in range(self.cfg.partitions)]

    def catalog_files(self) -> list[str]:
        if self.cfg.catalog.paths:
            files = sorted({f for pattern in self.cfg.catalog.paths for f in glob.glob(pattern)})
            if not files:
                raise FileNotFoundError(f"catalog.paths {list(self.cfg.catalog.paths)}: no files")
            return files
        n = self.cfg.catalog.generate_files
        return [self.path("catalog", f"catalog-{i:05d}-of-{n:05d}.jsonl") for i in range(n)]

    # identity: a directory holds one build
    def claim(self) -> None:
        """Record the config; refuse to mix two different builds in one directory."""
        config = to_json(self.cfg)
        digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
        info = self.path("build.json")
        if os.path.exists(info):
            old = load_json(info)
            if old.get("config_hash") != digest:
                raise ValueError(
                    f"{info}: this directory holds a build with another config "
                    f"({old.get('config_hash')} != {digest}); use a new --out"
                )
            return
        os.makedirs(self.root, exist_ok=True)
        dump_json(info, {"config": config, "config_hash": digest})

    # markers and barriers
    def done(self, stage: str, unit: str) -> bool:
        return os.path.exists(self.marker(stage, unit))

    def mark(self, stage: str, unit: str, report: dict) -> None:
        dump_json(self.marker(stage, unit), report)

    def report(self, stage: str, unit: str) -> dict:
        return load_json(self.marker(stage, unit))

    def wait(self, stage: str, units: list[str], timeout_s: float, poll_s: float = 2.0) -> None:
        """Block until every unit of `stage` is done (other workers may still be on them)."""
        deadline = time.monotonic() + timeout_s
        while True:
            missing = [u for u in units if not self.done(stage, u)]
            if not missing:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{self.root}: stage {stage!r} is not done for {len(missing)} unit(s) "
                    f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}); they "
                    "belong to other workers (--num-shards/--shard-index): run those, then retry"
                )
            time.sleep(poll_s)

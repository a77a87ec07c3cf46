"""The build directory: where the in-process runner keeps each stage's outputs and done-markers,
and where both runners write rejects, caches and the final datasets.

A unit of work (one input file, one partition, one task and split, or the whole build) is done
when its marker exists. Outputs are written under temporary names and renamed, and the marker
last, so a unit killed part-way is simply redone, and never leaves a duplicate or a
half-written file behind.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os

import numpy as np

from compass_jax import jsonio
from compass_jax.atomic import atomic_open
from compass_jax.configio import to_json
from pipelines.config import BuildConfig


def dump_npz(path: str, **arrays) -> None:
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)


def load_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}  # an NpzFile re-reads the array on every access


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

    def cache(self, stage: str, unit: str) -> str:
        return self.path("cache", stage, unit)

    @property
    def tfds_root(self) -> str:
        return self.path("tfds")

    def catalog_files(self) -> list[str]:
        if self.cfg.catalog.paths:
            files = sorted({f for pattern in self.cfg.catalog.paths for f in glob.glob(pattern)})
            if not files:
                raise FileNotFoundError(f"catalog.paths {list(self.cfg.catalog.paths)}: no files")
            return files
        n = self.cfg.catalog.generate_files
        return [self.path("catalog", f"catalog-{i:05d}-of-{n:05d}.jsonl") for i in range(n)]

    def write_rejects(self, stage: str, unit: str, rejects: list[dict]) -> None:
        jsonio.write_jsonl(self.rejects(stage, unit), ({"stage": stage, **r} for r in rejects))

    # identity: a directory holds one build
    def claim(self) -> None:
        """Record the config; refuse to mix two different builds in one directory. Remove
        what a killed writer left (temporary files are never part of a result)."""
        config = to_json(self.cfg)
        digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
        info = self.path("build.json")
        if os.path.exists(info):
            old = jsonio.read_json(info)
            if old.get("config_hash") != digest:
                raise ValueError(
                    f"{info}: this directory holds a build with another config "
                    f"({old.get('config_hash')} != {digest}); use a new --out"
                )
            for stale in glob.glob(self.path("**", ".tmp-*"), recursive=True):
                if os.path.isfile(stale):
                    os.remove(stale)
            return
        os.makedirs(self.root, exist_ok=True)
        jsonio.write_json(info, {"config": config, "config_hash": digest})

    # markers
    def done(self, stage: str, unit: str) -> bool:
        return os.path.exists(self.marker(stage, unit))

    def mark(self, stage: str, unit: str, report: dict) -> None:
        jsonio.write_json(self.marker(stage, unit), report)

    def report(self, stage: str, unit: str) -> dict:
        return jsonio.read_json(self.marker(stage, unit))

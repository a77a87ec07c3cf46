"""Answers cached by prompt hash, as JSONL files in a directory: one file per generated batch,
written atomically and named by the batch's keys. A run killed part-way keeps every batch it
paid for; a rerun, or a retried Beam bundle, reads them back and asks the model only for the
rest. Plain files on any shared filesystem, so concurrent retries of one bundle never corrupt
it (the last rename wins, and both answers were valid)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

from compass_jax import jsonio


class PromptCache:
    def __init__(self, directory: str | os.PathLike | None):
        self.directory = os.fspath(directory) if directory else None
        self._answers: dict[str, Any] = {}
        if self.directory and os.path.isdir(self.directory):
            for name in sorted(os.listdir(self.directory)):
                if name.endswith(".jsonl"):  # not the `.tmp-*` of a write that was killed
                    for row in jsonio.read_jsonl(os.path.join(self.directory, name)):
                        self._answers[row["key"]] = row["value"]

    def get(self, key: str) -> Any | None:
        return self._answers.get(key)

    def put_many(self, items: Sequence[tuple[str, Any]]) -> None:
        if not items:
            return
        self._answers.update(items)
        if self.directory:
            name = hashlib.sha256("".join(k for k, _ in items).encode()).hexdigest()[:24]
            rows = ({"key": k, "value": v} for k, v in items)
            jsonio.write_jsonl(os.path.join(self.directory, f"{name}.jsonl"), rows)

    def close(self) -> None:
        pass

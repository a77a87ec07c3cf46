"""Answers cached by prompt hash in SQLite. Answers are committed once per generated batch
(one transaction, one fsync), so a killed run keeps every batch it had paid for, and a re-run
asks the model only for the rest."""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any


class PromptCache:
    def __init__(self, path: str | os.PathLike | None):
        self.path = os.fspath(path) if path else ":memory:"
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._db = sqlite3.connect(self.path)
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT)")
        self._db.commit()
        self.hits = self.misses = 0

    def get(self, key: str) -> Any | None:
        row = self._db.execute("SELECT value FROM answers WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return json.loads(row[0])

    def put_many(self, items: list[tuple[str, Any]]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO answers VALUES (?, ?)",
            [(k, json.dumps(v, ensure_ascii=False, sort_keys=True)) for k, v in items],
        )
        self._db.commit()

    def close(self) -> None:
        self._db.close()

"""Class ids for categories: one id space per level of the category path.

Ids come from the sorted set of paths seen in the whole catalog (every partition contributes
its set), so they do not depend on file order or on how the build was sharded. A path is keyed
by `category_ids` when the catalog has them (one class for a category in every language),
else by the names.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence


@dataclasses.dataclass(frozen=True)
class LabelMap:
    levels: tuple[tuple[str, ...], ...]  # level -> sorted path keys ("a/b/c")

    @classmethod
    def from_paths(cls, paths: Iterable[Sequence[str]]) -> LabelMap:
        by_level: dict[int, set[str]] = {}
        for path in paths:
            for depth in range(len(path)):
                by_level.setdefault(depth, set()).add("/".join(path[: depth + 1]))
        return cls(tuple(tuple(sorted(by_level[d])) for d in sorted(by_level)))

    @property
    def _index(self) -> list[dict[str, int]]:
        return [{k: i for i, k in enumerate(keys)} for keys in self.levels]

    def path_ids(self, path: Sequence[str]) -> tuple[int, ...]:
        index = self._index
        return tuple(index[d]["/".join(path[: d + 1])] for d in range(len(path)))

    def label(self, path: Sequence[str], level: int = -1) -> int:
        """The class id at `level` (-1: the leaf, whatever the path's depth)."""
        ids = self.path_ids(path)
        return ids[level] if -len(ids) <= level < len(ids) else ids[-1]

    def to_json(self) -> dict:
        return {"levels": [list(keys) for keys in self.levels]}

    @classmethod
    def from_json(cls, raw: dict) -> LabelMap:
        return cls(tuple(tuple(keys) for keys in raw["levels"]))

    def dumps(self) -> str:
        return json.dumps(self.to_json(), ensure_ascii=False, sort_keys=True)

"""Record filters. Each returns (kept, rejects); a reject is `{"reason", "filter", "record"}`,
written to the build's rejects files, and counted per reason in the stage report."""

from __future__ import annotations


def reject(record: dict, filter_name: str, reason: str) -> dict:
    return {"filter": filter_name, "reason": reason, "uid": record["uid"], "record": record}

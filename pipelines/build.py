"""The build: stages in order, each split into units (input files, partitions, or the whole
build), run by any number of workers.

`run(cfg, out, num_shards=N, shard_index=I)` runs unit k of every stage on worker k % N
(whole-build units on worker 0), skipping units already done, and waits at a barrier where a
stage needs every unit of an earlier one. One worker with N=1 runs everything in order. The
output does not depend on N: partitions, not workers, decide the data.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable

from tqdm.auto import tqdm

from pipelines import stages
from pipelines.config import BuildConfig
from pipelines.tasks import TASKS
from pipelines.workspace import Workspace, dump_json

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    units: Callable[[Workspace], list[str]]
    run: Callable[[Workspace, str], dict]
    needs: tuple[str, ...] = ()  # stages whose every unit must be done first
    enabled: Callable[[BuildConfig], bool] = lambda cfg: True


def _files(ws: Workspace) -> list[str]:
    return [f"f{i:05d}" for i in range(len(ws.catalog_files()))]


def _whole(ws: Workspace) -> list[str]:
    return ["all"]


def _parts(ws: Workspace) -> list[str]:
    return ws.partition_units()


def _finalize(ws: Workspace, unit: str) -> dict:
    stages.split_check(ws)
    labels = stages.label_map(ws.root).to_json()
    dump_json(ws.path("labels.json"), labels)
    spec = stages.tfds_io.features()
    index = {}
    for task, lengths in sorted(stages.shard_lengths(ws).items()):
        path = stages.tfds_io.write_metadata(
            ws.tfds_root, task, ws.cfg.version, stages.task_description(task), lengths, spec
        )
        index[task] = {
            "path": path[len(ws.root) + 1 :],
            "instruction": TASKS[task].instruction,
            "labelled": TASKS[task].labelled,
            "records": {s: sum(n) for s, n in sorted(lengths.items())},
        }
    dump_json(ws.path("datasets.json"), {"version": ws.cfg.version, "tasks": index})
    reports = {
        s.name: summarize(ws, s) for s in STAGES if s.name != "finalize" and s.enabled(ws.cfg)
    }
    dump_json(ws.path("report.json"), reports)
    card = stages_card(ws, labels, reports)
    return {"tasks": {t: c["records"] for t, c in card["tasks"].items()}}


def stages_card(ws, labels, reports):
    from pipelines.card import write_card

    return write_card(ws, labels, reports)


STAGES = (
    Stage(
        "catalog",
        lambda ws: [f"file-{i:05d}" for i in range(ws.cfg.catalog.generate_files)],
        stages.run_catalog,
        enabled=lambda cfg: not cfg.catalog.paths,
    ),
    Stage("ingest", _files, stages.run_ingest, needs=("catalog",)),
    Stage("construct", _parts, stages.run_construct, needs=("ingest",)),
    Stage(
        "synthesize",
        _parts,
        stages.run_synthesize,
        needs=("ingest",),
        enabled=lambda cfg: cfg.synthesis is not None,
    ),
    Stage(
        "translate",
        _parts,
        stages.run_translate,
        needs=("ingest",),
        enabled=lambda cfg: cfg.translation is not None,
    ),
    Stage("filter", _parts, stages.run_filter, needs=("construct", "synthesize", "translate")),
    Stage("dedup", _whole, stages.run_dedup, needs=("filter",)),
    Stage(
        "embed",
        _parts,
        stages.run_embed,
        needs=("dedup",),
        enabled=lambda cfg: cfg.mining is not None,
    ),
    Stage("mine", _parts, stages.run_mine, needs=("dedup", "embed")),
    Stage("write", _parts, stages.run_write, needs=("mine",)),
    Stage("finalize", _whole, _finalize, needs=("write",)),
)
BY_NAME = {s.name: s for s in STAGES}


def summarize(ws: Workspace, stage: Stage) -> dict:
    """One stage's reports summed over its units (numbers add, nested counts merge)."""
    total: dict = {"units": 0, "seconds": 0.0}
    for unit in stage.units(ws):
        if ws.done(stage.name, unit):
            total["units"] += 1
            _merge(total, ws.report(stage.name, unit))
    total["seconds"] = round(total["seconds"], 3)
    return total


def _merge(into: dict, report: dict) -> None:
    for k, v in report.items():
        if isinstance(v, bool | str):
            into.setdefault(k, v)
        elif isinstance(v, int | float):
            into[k] = into.get(k, 0) + v
        elif isinstance(v, dict):
            _merge(into.setdefault(k, {}), v)


def run(
    cfg: BuildConfig,
    out: str,
    *,
    num_shards: int = 1,
    shard_index: int = 0,
    wait_timeout_s: float | None = None,
    progress: bool = True,
    until: str | None = None,
) -> dict:
    """Run this worker's share of the build in `out`; returns {stage: units run here}."""
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"--shard-index {shard_index} must be in [0, {num_shards})")
    if until is not None and until not in BY_NAME:
        raise ValueError(f"--until {until!r}: expected one of {list(BY_NAME)}")
    ws = Workspace(out, cfg)
    ws.claim()
    timeout = wait_timeout_s if wait_timeout_s is not None else (0 if num_shards == 1 else 86400)
    ran: dict[str, int] = {}
    for stage in STAGES:
        if not stage.enabled(cfg):
            continue
        for need in stage.needs:
            if BY_NAME[need].enabled(cfg):
                ws.wait(need, BY_NAME[need].units(ws), timeout)
        units = stage.units(ws)
        mine = [
            u for i, u in enumerate(units) if (0 if u == "all" else i) % num_shards == shard_index
        ]
        todo = [u for u in mine if not ws.done(stage.name, u)]
        bar = tqdm(
            total=len(mine),
            initial=len(mine) - len(todo),
            desc=f"{stage.name:>10}",
            unit="unit",
            disable=not progress,
            leave=True,
        )
        for unit in todo:
            tic = time.perf_counter()
            report = stage.run(ws, unit)
            report["seconds"] = round(time.perf_counter() - tic, 3)
            ws.mark(stage.name, unit, _jsonable(report))
            bar.update(1)
        bar.close()
        ran[stage.name] = len(todo)
        if stage.name == until:
            break
    return ran


def _jsonable(value):
    if isinstance(value, Counter | dict):
        return {str(k): _jsonable(v) for k, v in sorted(dict(value).items())}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value

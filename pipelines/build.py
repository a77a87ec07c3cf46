"""The build: `run(cfg, out, runner="local" | "beam")`.

`local` (the default) runs the stages in order in this process, each split into units (input
files, partitions, (task, split) shards, or the whole build), keeping every unit's output and
done-marker in `out/work/`: a killed build resumes at the first unit not done. `beam` runs the
same units as an Apache Beam pipeline (`pipelines.beam`) on any Beam runner. Both write the
same bytes for the same config.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

from tqdm.auto import tqdm

from pipelines import stages, units
from pipelines.config import BuildConfig
from pipelines.workspace import Workspace

RUNNERS = ("local", "beam")


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    units: Callable[[Workspace], list[str]]
    run: Callable[[Workspace, str], dict]
    enabled: Callable[[BuildConfig], bool] = lambda cfg: True


def _files(ws: Workspace) -> list[str]:
    return [f"f{i:05d}" for i in range(len(ws.catalog_files()))]


def _parts(ws: Workspace) -> list[str]:
    return units.partition_units(ws.cfg)


def _shards(ws: Workspace) -> list[str]:
    return [f"{task}.{split}" for task, split in units.shard_keys(ws.cfg)]


def _whole(ws: Workspace) -> list[str]:
    return ["all"]


STAGES = (
    Stage(
        "catalog",
        lambda ws: [f"file-{i:05d}" for i in range(ws.cfg.catalog.generate_files)],
        stages.run_catalog,
        enabled=lambda cfg: not cfg.catalog.paths,
    ),
    Stage("ingest", _files, stages.run_ingest),
    Stage("construct", _parts, stages.run_construct),
    Stage("synthesize", _parts, stages.run_synthesize, enabled=lambda c: c.synthesis is not None),
    Stage("translate", _parts, stages.run_translate, enabled=lambda c: c.translation is not None),
    Stage("filter", _parts, stages.run_filter),
    Stage("dedup", _whole, stages.run_dedup),
    Stage("embed", _parts, stages.run_embed),
    Stage("mine", _shards, stages.run_mine),
    Stage("write", _shards, stages.run_write),
    Stage("finalize", _whole, lambda ws, unit: stages.run_finalize(ws, unit, _reports(ws))),
)
BY_NAME = {s.name: s for s in STAGES}


def summarize(ws: Workspace, stage: Stage) -> dict:
    """One stage's reports summed over its units (numbers add, nested counts merge)."""
    total: dict = {"units": 0, "seconds": 0.0}
    for unit in stage.units(ws):
        if ws.done(stage.name, unit):
            total["units"] += 1
            units.merge_reports(total, ws.report(stage.name, unit))
    total["seconds"] = round(total["seconds"], 3)
    return total


def _reports(ws: Workspace) -> dict:
    return {s.name: summarize(ws, s) for s in STAGES[:-1] if s.enabled(ws.cfg)}


def run(
    cfg: BuildConfig,
    out: str,
    *,
    runner: str = "local",
    beam_options: Sequence[str] = (),
    progress: bool = True,
    until: str | None = None,
) -> dict:
    """Build `cfg` into `out`; returns {stage: units run} (local) or {"beam": report} (beam)."""
    if runner not in RUNNERS:
        raise ValueError(f"--runner {runner!r}: expected one of {list(RUNNERS)}")
    if until is not None and until not in BY_NAME:
        raise ValueError(f"--until {until!r}: expected one of {list(BY_NAME)}")
    if runner == "beam":
        if until is not None:
            raise ValueError("--until: the beam runner runs the whole pipeline")
        from pipelines import beam

        return beam.run(cfg, out, beam_options)
    if beam_options:
        raise ValueError("--beam-options: only with --runner beam")
    ws = Workspace(out, cfg)
    ws.claim()
    ran: dict[str, int] = {}
    for stage in STAGES:
        if not stage.enabled(cfg):
            continue
        all_units = stage.units(ws)
        todo = [u for u in all_units if not ws.done(stage.name, u)]
        bar = tqdm(
            total=len(all_units),
            initial=len(all_units) - len(todo),
            desc=f"{stage.name:>10}",
            unit="unit",
            disable=not progress,
            leave=True,
        )
        for unit in todo:
            tic = time.perf_counter()
            report = stage.run(ws, unit)
            report["seconds"] = round(time.perf_counter() - tic, 3)
            ws.mark(stage.name, unit, report)
            bar.update(1)
        bar.close()
        ran[stage.name] = len(todo)
        if stage.name == until:
            break
    return ran

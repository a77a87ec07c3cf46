"""The order of the demo's stages, and the report they add up to (see the package docstring)."""

from __future__ import annotations

import datetime
import os
import shutil
import time
from collections.abc import Sequence
from typing import Any

from compass_jax.resolve import DEFAULT_MODEL
from compass_jax.workflows.demo import claims as judged
from compass_jax.workflows.demo import report as reporting
from compass_jax.workflows.demo.sizes import SIZES
from compass_jax.workflows.demo.stages import (
    Stages,
    build_data,
    export_both,
    fp8_agreement,
    general_suite_info,
    simulate_devices,
)
from compass_jax.workflows.demo.training import ARMS, run_dir, train, train_config

EXPERIMENTS = ("cam-density",)


def run_demo(
    size: str = "small",
    *,
    model: str = DEFAULT_MODEL,
    out: str = "out/demo",
    devices: int = 8,
    fresh: bool = False,
    seed: int = 0,
    seeds: int | None = None,
    experiments: Sequence[str] = (),
    readme: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run every stage into `out` (resuming what is there unless `fresh`) and return the
    report also written to `out/report.json` and `out/report.md`.

    `seed` fixes the catalog and its split (so the test items) and is the first training seed;
    each arm trains `seeds` times (default: the size's), run `s` with seed `seed + s`
    (`training`). `experiments` adds `cam-density` (`density`); `readme` rewrites that README's
    demo block from the report (`readme.update_readme`); `progress`: progress bars."""
    unknown = sorted(set(experiments) - set(EXPERIMENTS))
    if unknown:
        raise ValueError(f"unknown experiment(s) {unknown}; choose from {list(EXPERIMENTS)}")
    simulate_devices(devices)
    import jax

    from compass_jax.eval import load_suite
    from compass_jax.eval.model_scores import SuiteScores
    from compass_jax.machine import machine_info, one_line
    from compass_jax.resolve import resolve_model
    from compass_jax.workflows.merge_sweep import Objective, sweep

    name, size, out = size, SIZES[size], os.path.abspath(out)
    runs = size.seeds if seeds is None else seeds
    if runs < 1:
        raise ValueError(f"--seeds must be at least 1, got {runs}")
    if readme:
        from compass_jax.workflows.demo.readme import check_readme

        check_readme(readme)  # before the run, not after it
    if fresh and os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out, exist_ok=True)
    stages = Stages()
    machine = machine_info(with_torch=False)
    print(f"compass-jax demo --size {name} --seeds {runs}: {one_line(machine)}")

    paths = stages.run("data", lambda: build_data(out, size, seed, progress=progress))
    base = str(stages.run("import base model", lambda: resolve_model(model)))
    general = paths["general"]
    suites = {"domain": load_suite(paths["suite"]), "general": load_suite(general)}
    cache = os.path.join(out, "cache")
    scores = SuiteScores(suites, cache_dir=cache, progress=progress)
    stages.run("evaluate base", lambda: scores.results(base))

    # A trained model is its workdir: the resolver exports its checkpoint once, on first use.
    workdirs = {label: [run_dir(out, label, s) for s in range(runs)] for label, _ in ARMS}
    histories, trained = {}, {label: [] for label, _ in ARMS}
    mesh = f"{len(jax.devices())} devices, {size.steps} steps x {size.batch_size}"
    for s in range(runs):
        for label, cam in ARMS:
            cfg = train_config(base, paths["train"], size, cam=cam, seed=seed + s)
            workdir = workdirs[label][s]
            histories[f"{label} seed {s}"] = stages.run(
                f"train {label} seed {s} ({mesh}, GradCache chunks of {size.chunk})",
                lambda cfg=cfg, workdir=workdir: train(cfg, workdir, progress=progress),
            )
            # The forgetting check and the merge need seed 0 of CAM alone on the general suite.
            needed = ["domain", "general"] if cam and s == 0 else ["domain"]
            trained[label].append(stages.run(
                f"evaluate {label} seed {s} ({', '.join(needed)})",
                lambda workdir=workdir, needed=needed: scores.results(workdir, needed),
            ))  # fmt: skip

    objective = Objective("domain", "general", 0.98)
    ts = [0.0, *size.merge_ts, 1.0]
    result = stages.run(
        "merge sweep",
        lambda: sweep(base, workdirs["CAM"][0], ts, scores.metrics(), objective,
                      out_dir=os.path.join(out, "sweep"), progress=progress),
    )  # fmt: skip
    merged = result["best_model"] or base  # t = 0 (the base) when no merge keeps enough
    exports = stages.run("export bf16 + FP8", lambda: export_both(merged, out))
    stages.run("evaluate FP8 export", lambda: scores.results(exports["fp8"]))
    fp8 = stages.run(
        "FP8 vs bf16 embeddings",
        lambda: fp8_agreement(exports["bf16"], exports["fp8"], suites["domain"], cache),
    )
    # After the agreement stage, which cached the bf16 export's embeddings of the domain suite.
    stages.run("evaluate bf16 export", lambda: scores.results(exports["bf16"]))
    density = None
    if "cam-density" in experiments:
        from compass_jax.workflows.demo.density import run_density

        density = stages.run(
            "CAM-density experiment",
            lambda: run_density(out, size, base, paths["train"], suites["domain"], cache,
                                seed=seed, progress=progress),
        )  # fmt: skip
    reporting.plot_training(histories, os.path.join(out, "training.png"))

    exported = {"merged": merged, "FP8 export": exports["fp8"], "bf16 export": exports["bf16"]}
    models = {"base": base, **workdirs, **exported}
    all_scores = {
        "base": scores.results(base),
        **trained,
        **{label: scores.results(path) for label, path in exported.items()},
    }
    seeds_used = {
        "runs": runs,
        "training": [seed + s for s in range(runs)],
        "note": "catalog and split from `seed`; run s trains with seed `seed + s` (batch order "
        "and dropout); seed 0 is merged, exported and scored on the general suite",
    }
    report = {
        "size": name,
        "seed": seed,
        "seeds": seeds_used,
        "date": datetime.date.today().isoformat(),
        "machine": machine,
        "machine_line": one_line(machine),
        "model": model,
        "training": (
            f"{runs} seed(s) per arm, each {size.steps} steps x global batch {size.batch_size} "
            f"on {len(jax.devices())} devices (GradCache chunks of {size.chunk}), top "
            f"{size.trained_layers} layers, dropout on, lengths {size.query_length}/"
            f"{size.document_length}, lr {size.learning_rate:g}"
        ),
        "general_suite": general_suite_info(general),
        "sweep": {
            "best_t": result["best_t"],
            "ts": ts,
            "rows": result["rows"],
            "objective": result["objective"]["text"],
        },
        "models": models,
        "scores": all_scores,
        "fp8_cosine": fp8,
        "checks": judged.checks(all_scores, fp8, result),
        "seed_table": judged.seed_table(all_scores) if runs > 1 else [],
        "fp8_vs_bf16": judged.fp8_differences(all_scores),
        "histories": histories,
        "figures": reporting.figures(out, density=density is not None),
        "stage_seconds": stages.seconds,
        "seconds_total": round(time.perf_counter() - stages.start, 1),
    }
    print("\n" + reporting.write_report(out, report, density))
    print(f"results: {os.path.join(out, 'report.md')}")
    if readme:
        from compass_jax.workflows.demo.readme import update_readme

        update_readme(readme, out)
        print(f"README block and figures: {readme}")
    return report

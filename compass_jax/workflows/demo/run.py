"""The order of the demo's stages, and the report they add up to (see the package docstring)."""

from __future__ import annotations

import datetime
import os
import shutil
import time
from typing import Any

from compass_jax.resolve import DEFAULT_MODEL
from compass_jax.workflows.demo import report as reporting
from compass_jax.workflows.demo.sizes import SIZES
from compass_jax.workflows.demo.stages import (
    Stages,
    build_data,
    export_both,
    fp8_agreement,
    simulate_devices,
)
from compass_jax.workflows.demo.training import train, train_config


def run_demo(
    size: str = "small",
    *,
    model: str = DEFAULT_MODEL,
    out: str = "out/demo",
    devices: int = 8,
    fresh: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Run every stage into `out` (resuming what is there unless `fresh`) and return the
    report also written to `out/report.json` and `out/report.md`; `progress`: progress bars."""
    simulate_devices(devices)
    import jax

    from compass_jax.eval import load_suite
    from compass_jax.eval.model_scores import SuiteScores
    from compass_jax.machine import machine_info, one_line
    from compass_jax.resolve import resolve_model
    from compass_jax.workflows.merge_sweep import Objective, sweep

    name, size, out = size, SIZES[size], os.path.abspath(out)
    if fresh and os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out, exist_ok=True)
    stages = Stages()
    machine = machine_info(with_torch=False)
    print(f"compass-jax demo --size {name}: {one_line(machine)}")

    paths = stages.run("data", lambda: build_data(out, size, seed, progress=progress))
    base = str(stages.run("import base model", lambda: resolve_model(model)))
    suites = {"domain": load_suite(paths["suite"]), "general": load_suite("general")}
    cache = os.path.join(out, "cache")
    scores = SuiteScores(suites, cache_dir=cache, progress=progress)
    stages.run("evaluate base", lambda: scores.results(base))

    # A trained model is its workdir: the resolver exports its checkpoint once, on first use.
    models = {"base": base}
    histories = {}
    for label, cam in (("CAM", True), ("no-CAM", False)):
        cfg = train_config(base, paths["train"], size, cam=cam, seed=seed)
        models[label] = os.path.join(out, f"train-{label.lower().replace('-', '')}")
        histories[label] = stages.run(
            f"train {label} ({len(jax.devices())} devices, {size.steps} steps x "
            f"{size.batch_size}, GradCache chunks of {size.chunk})",
            lambda cfg=cfg, label=label: train(cfg, models[label], progress=progress),
        )
        stages.run(f"evaluate {label}", lambda label=label: scores.results(models[label]))

    objective = Objective("domain", "general", 0.98)
    ts = [0.0, *size.merge_ts, 1.0]
    sweep_dir = os.path.join(out, "sweep")
    result = stages.run(
        "merge sweep",
        lambda: sweep(
            base,
            models["CAM"],
            ts,
            scores.metrics(),
            objective,
            out_dir=sweep_dir,
            progress=progress,
        ),
    )
    merged = result["best_model"] or base  # t = 0 (the base) when no merge keeps enough
    models["merged"] = merged
    exports = stages.run("export bf16 + FP8", lambda: export_both(merged, out))
    models["FP8 export"] = exports["fp8"]
    stages.run("evaluate FP8 export", lambda: scores.results(exports["fp8"]))
    fp8 = stages.run(
        "FP8 vs bf16 embeddings",
        lambda: fp8_agreement(exports["bf16"], exports["fp8"], suites["domain"], cache),
    )
    # After the agreement stage, which cached the bf16 export's embeddings of the domain suite.
    models["bf16 export"] = exports["bf16"]
    stages.run("evaluate bf16 export", lambda: scores.results(exports["bf16"]))
    reporting.plot_training(histories, os.path.join(out, "training.png"))

    all_scores = {label: scores.results(path) for label, path in models.items()}
    report = {
        "size": name,
        "seed": seed,
        "date": datetime.date.today().isoformat(),
        "machine": machine,
        "machine_line": one_line(machine),
        "model": model,
        "training": (
            f"{size.steps} steps x global batch {size.batch_size} on {len(jax.devices())} "
            f"devices (GradCache chunks of {size.chunk}), top {size.trained_layers} layers, "
            f"lengths {size.query_length}/{size.document_length}, lr {size.learning_rate:g}"
        ),
        "sweep": {"best_t": result["best_t"], "ts": ts, "rows": result["rows"]},
        "models": models,
        "scores": all_scores,
        "fp8_cosine": fp8,
        "checks": reporting.checks(all_scores, fp8, result),
        "fp8_vs_bf16": reporting.fp8_differences(all_scores),
        "histories": histories,
        "stage_seconds": stages.seconds,
        "seconds_total": round(time.perf_counter() - stages.start, 1),
    }
    print("\n" + reporting.write_report(out, report))
    print(f"results: {os.path.join(out, 'report.md')}")
    return report

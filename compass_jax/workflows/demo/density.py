"""The CAM-density experiment (`compass-jax demo --experiment cam-density`): does CAM's edge over
its no-CAM ablation grow with the share of in-batch candidates that share the anchor's class?

The paper's argument: without the class mask, another example of the anchor's class is treated
as a negative and pushed away, so the more such candidates a batch holds, the more CAM should
help. Here that share is the controlled variable. CAM and no-CAM train on the class-labelled
tasks alone (title -> category, clustering pairs), their batches drawn as same-class groups at
each target share (`compass_jax.data.class_density`), each pair of arms over `seeds` training
seeds (the same batches for both arms of a seed); every run is scored on the held-out
category-classification and clustering tasks. Per share: CAM minus no-CAM on category accuracy
and V-measure, with the interval over seeds and items (`bootstrap.seed_spread`), and the share
of candidates CAM's class mask actually removed during training (`masked_class`, measured by the
loss). At share 0 no candidate shares the anchor's class, so the two arms train alike: the
difference there is what the masks cost when there is nothing to mask.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from compass_jax import jsonio
from compass_jax.atomic import atomic_open, atomic_path
from compass_jax.eval.compare import family
from compass_jax.workflows.demo.sizes import CLASS_TASKS, Size
from compass_jax.workflows.demo.stages import Stages
from compass_jax.workflows.demo.training import ARMS, run_dir, train, train_config

FAMILIES = (("category", "category accuracy"), ("clustering", "clustering V-measure"))
RESAMPLES = 1000


def class_suite(suite):
    """The suite's category-classification and clustering tasks (what CAM's mask targets)."""
    from compass_jax.eval.suite import Suite

    keep = {f for f, _ in FAMILIES}
    tasks = tuple(t for t in suite.tasks if family(t.name, t.lang) in keep)
    return Suite(f"{suite.name} (category, clustering)", tasks)


def experiment_size(size: Size) -> Size:
    """`size` with the experiment's steps and batch, training the class tasks alone."""
    d = size.density
    weights = tuple((t, w if t in CLASS_TASKS else 0.0) for t, w in size.task_weights)
    return dataclasses.replace(
        size, steps=d.steps, batch_size=d.batch_size, chunk=d.batch_size, task_weights=weights
    )


def _masked_class(workdir: str) -> float:
    """The mean over logged steps of the share of candidates the class mask removed."""
    rows = jsonio.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    return float(np.mean([r["masked_class"] for r in rows if "masked_class" in r]))


def run_density(
    out: str,
    size: Size,
    base: str,
    train_path: str,
    suite,
    cache_dir: str,
    *,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Train and score every (share, seed, arm) under `out/cam-density` (resuming), and write
    `density.json`, `density.md` and `density.png` there; returns the result. `progress`:
    progress bars."""
    from compass_jax.eval.bootstrap import seed_spread
    from compass_jax.eval.model_scores import SuiteScores

    d, root = size.density, os.path.join(out, "cam-density")
    trained = experiment_size(size)
    scores = SuiteScores({"classes": class_suite(suite)}, cache_dir=cache_dir, progress=progress)
    stages, results, masked = Stages(), {}, {}

    def train_and_score(cfg, workdir: str) -> dict:
        train(cfg, workdir, progress=progress)
        return scores.results(workdir)["classes"]

    for share in d.shares:
        density = {task: share for task in CLASS_TASKS}
        for s in range(d.seeds):
            for label, cam in ARMS:
                cfg = train_config(base, train_path, trained, cam=cam, seed=seed + s,
                                   class_density=density)  # fmt: skip
                workdir = run_dir(root, label, s, prefix=f"share{share:g}")
                scored = stages.run(
                    f"share {share:g}, {label} seed {s}: train + evaluate",
                    lambda cfg=cfg, workdir=workdir: train_and_score(cfg, workdir),
                )
                results.setdefault(share, {}).setdefault(label, []).append(scored)
                if cam:
                    masked.setdefault(share, []).append(_masked_class(workdir))
    weights = [(t, w) for t, w in trained.task_weights if w]
    rows = []
    for share in d.shares:
        row = {"share": share, "masked_class": float(np.mean(masked[share]))}
        for fam, what in FAMILIES:
            spread = seed_spread(results[share]["CAM"], results[share]["no-CAM"], family=fam,
                                 resamples=RESAMPLES, seed=seed)  # fmt: skip
            row[fam] = {"metric": what, "CAM": spread["a"], "no-CAM": spread["b"],
                        "difference": spread["difference"],
                        "comparison": spread["comparison"].to_json()}  # fmt: skip
        rows.append(row)
    result = {
        "setting": f"{d.seeds} seeds x {len(d.shares)} shares x 2 arms; each run {d.steps} steps "
        f"x batch {d.batch_size} on {', '.join(f'{t} (weight {w:g})' for t, w in weights)}, top "
        f"{size.trained_layers} layers, lr {size.learning_rate:g}",
        "seeds": [seed + s for s in range(d.seeds)],
        "rows": rows,
        "stage_seconds": stages.seconds,
        "seconds": round(time.perf_counter() - stages.start, 1),
    }
    jsonio.write_json(os.path.join(root, "density.json"), result)
    with atomic_open(os.path.join(root, "density.md"), "w") as f:
        f.write("\n".join(density_markdown(result)))
    plot_density(result, os.path.join(root, "density.png"))
    return result


_SHOWN = {"yes": "CAM higher", "no": "CAM lower", "not shown": "not shown"}


def density_markdown(result: Mapping[str, Any], heading: str = "#") -> list[str]:
    out = [f"{heading} CAM minus no-CAM by same-class share of the batch", "",
           f"{result['setting']}. Share: the target mean share of an anchor's in-batch "
           "candidates that are of its class; masked: the share CAM's class mask removed, as "
           "the loss measured it. Intervals over seeds and test items (95%).", "",
           "| share | masked | " + " | ".join(
               f"{what}: CAM / no-CAM | difference | 95% CI | shown" for _, what in FAMILIES)
           + " |", "|---|---|" + "---|---|---|---|" * len(FAMILIES)]  # fmt: skip
    for row in result["rows"]:
        cells = []
        for fam, _ in FAMILIES:
            r, c = row[fam], row[fam]["comparison"]
            cells.append(f"{r['CAM']['mean']:.4f} / {r['no-CAM']['mean']:.4f} | "
                         f"{c['estimate']:+.4f} | [{c['low']:+.4f}, {c['high']:+.4f}] | "
                         f"{_SHOWN[c['verdict']]}")  # fmt: skip
        out.append(f"| {row['share']:g} | {row['masked_class']:.3f} | {' | '.join(cells)} |")
    return [*out, ""]


def plot_density(result: Mapping[str, Any], path: str) -> None:
    """CAM minus no-CAM against the share, one panel per metric, 95% intervals as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    shares = np.array([r["share"] for r in rows])
    fig, axes = plt.subplots(1, len(FAMILIES), figsize=(10, 3.4))
    for ax, (fam, what) in zip(axes, FAMILIES, strict=True):
        c = [r[fam]["comparison"] for r in rows]
        est = np.array([x["estimate"] for x in c])
        err = np.array([est - [x["low"] for x in c], [x["high"] for x in c] - est])
        ax.errorbar(100 * shares, 100 * est, yerr=100 * err, marker="o", capsize=4)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(f"{what}: CAM - no-CAM (points)", fontsize="medium")
        ax.set_xlabel("same-class share of in-batch candidates (%)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)

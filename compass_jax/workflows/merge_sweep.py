"""The merge sweep (`compass-jax merge-sweep`): merge a base and a fine-tuned model at several
`t`, evaluate each merge, and name the best `t` by a stated objective.

The objective maximises one metric subject to keeping a fraction of the base model's value of
another ("domain" quality up, "general" quality kept: the trade-off that merging back toward the
base is for). Results go to `sweep.json`, `sweep.md` and `sweep.png` (each metric against `t`).

Metrics are callables `model_dir -> float`. The command's two defaults (`suite_metrics`) are
evaluation suites' weighted averages (`compass_jax.eval`): `domain` (`--domain-suite`, default
the bundled sample's retrieval and bitext tasks; a build's `compass-jax data suite` output for
real use) and `general` (`--general-suite`, the bundled general-domain cross-lingual suite, the
forgetting check). By default the sweep maximises `domain` while keeping 98% of the base's
`general`. Other metrics plug in with `--metric name=module:function`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tqdm.auto import tqdm

from compass_jax import jsonio
from compass_jax.atomic import atomic_open, atomic_path
from compass_jax.eval import load_suite
from compass_jax.eval.model_scores import SuiteScores
from compass_jax.merge import MergeError, check_t, load_rules, parse_rules
from compass_jax.merge.rules import rules_to_json
from compass_jax.resolve import cache_dir, resolve_model
from compass_jax.workflows.merge import merge_checkpoints

Metric = Callable[[str], float]
DEFAULT_TS = tuple(round(0.1 * i, 1) for i in range(11))


@dataclasses.dataclass(frozen=True)
class Objective:
    """Maximise `maximize` subject to `keep >= base's keep - (1 - fraction) * |base's keep|`
    (for a positive metric: at least `fraction` of the base's value). Ties go to the smaller t,
    the merge closer to the base."""

    maximize: str = "domain"
    keep: str = "general"
    fraction: float = 0.98

    def threshold(self, base_value: float) -> float:
        return base_value - (1 - self.fraction) * abs(base_value)

    def describe(self) -> str:
        return (
            f"maximise {self.maximize} subject to {self.keep} >= {self.fraction:.0%} of the base's"
        )


def sweep(
    base_dir: str | os.PathLike,
    tuned_dir: str | os.PathLike,
    ts: Sequence[float],
    metrics: Mapping[str, Metric],
    objective: Objective = Objective(),
    *,
    out_dir: str | os.PathLike | None = None,
    mode: str = "mergekit",
    rules: Sequence[Any] | None = None,
    keep_models: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """SLERP `base_dir` -> `tuned_dir` at each `t`, evaluate every metric on each merge, and
    return `{"rows": [{"t", metric: value, ..., "feasible"}], "best_t", ...}`.

    Without rules, t = 0 and t = 1 are the inputs themselves (merging reproduces them bit for
    bit), so they are evaluated in place. With `out_dir`, the table, JSON and plot are written
    there and the best merge is kept as `out_dir/best` (all merges under `out_dir/models` with
    `keep_models`); without it, merges live in a temporary directory.
    """
    missing = sorted({objective.maximize, objective.keep} - set(metrics))
    if missing:
        raise MergeError(
            f"objective: metric(s) {missing} not computed; metrics are {sorted(metrics)}"
        )
    ts = sorted({float(t) for t in ts})
    if not ts:
        raise MergeError("ts: need at least one t")
    for t in ts:  # all of them before the first merge
        check_t(t)
    base_dir, tuned_dir = str(resolve_model(base_dir)), str(resolve_model(tuned_dir))
    rules = load_rules(rules) if isinstance(rules, str | os.PathLike) else parse_rules(rules)
    keep_models = keep_models and out_dir is not None
    if keep_models:
        models_dir = os.path.join(out_dir, "models")
        os.makedirs(models_dir, exist_ok=True)
    else:
        parent = None if out_dir is None else _mkdir(out_dir)
        models_dir = tempfile.mkdtemp(prefix=".merge-sweep-", dir=parent)
    start = time.perf_counter()
    evaluate = lambda d: {name: float(fn(d)) for name, fn in metrics.items()}
    try:
        base_scores = evaluate(base_dir)
        threshold = objective.threshold(base_scores[objective.keep])
        rows, best, best_dir = [], None, None
        for t in tqdm(ts, desc="sweep", unit="t", disable=not progress):
            merged = None  # only directories this sweep made are ever deleted
            # Without rules, t = 0 / 1 reproduce the inputs bit for bit: evaluate those instead.
            if t == 0 and not rules:
                model_dir, scores = base_dir, base_scores
            elif t == 1 and not rules:
                model_dir, scores = tuned_dir, evaluate(tuned_dir)
            else:
                model_dir = merged = os.path.join(models_dir, f"t={t:g}")
                merge_checkpoints(
                    [base_dir, tuned_dir],
                    merged,
                    t=t,
                    mode=mode,
                    rules=rules,
                    overwrite=True,
                    progress=False,
                )
                scores = evaluate(merged)
            row = {"t": t, **scores, "feasible": scores[objective.keep] >= threshold}
            rows.append(row)
            improves = row["feasible"] and (
                best is None or row[objective.maximize] > best[objective.maximize]
            )
            if improves:
                previous, (best, best_dir) = best_dir, (row, model_dir)
            else:
                previous = merged
            if previous is not None and os.path.dirname(previous) == models_dir and not keep_models:
                shutil.rmtree(previous)
        result = {
            "base": base_dir,
            "tuned": tuned_dir,
            "mode": mode,
            "rules": rules_to_json(rules),
            "objective": {
                **dataclasses.asdict(objective),
                "threshold": threshold,
                "text": objective.describe(),
            },
            "base_metrics": base_scores,
            "rows": rows,
            "best_t": None if best is None else best["t"],
            "best_model": best_dir,
            "seconds": round(time.perf_counter() - start, 3),
        }
        if out_dir is not None:
            if best_dir is not None and os.path.dirname(best_dir) == models_dir and not keep_models:
                result["best_model"] = os.path.join(out_dir, "best")
                if os.path.exists(result["best_model"]):
                    shutil.rmtree(result["best_model"])
                os.replace(best_dir, result["best_model"])
            write_results(result, os.fspath(out_dir))
        elif best_dir is not None and os.path.dirname(best_dir) == models_dir:
            result["best_model"] = None  # it lived in a temporary directory
        return result
    finally:
        if not keep_models:
            shutil.rmtree(models_dir, ignore_errors=True)


def _mkdir(path: str | os.PathLike) -> str:
    os.makedirs(path, exist_ok=True)
    return os.fspath(path)


def markdown_table(result: Mapping[str, Any]) -> str:
    names = [k for k in result["base_metrics"]]
    objective = result["objective"]
    lines = [
        f"Objective: {objective['text']} (threshold {objective['threshold']:.4f}); "
        f"best t = {result['best_t']}",
        "",
        "| t | " + " | ".join(names) + " | feasible |",
        "|---|" + "---|" * len(names) + "---|",
    ]
    for row in result["rows"]:
        best = " **best**" if row["t"] == result["best_t"] else ""
        cells = " | ".join(f"{row[n]:.4g}" for n in names)
        lines.append(f"| {row['t']:g}{best} | {cells} | {'yes' if row['feasible'] else 'no'} |")
    return "\n".join(lines) + "\n"


def plot(result: Mapping[str, Any], path: str) -> None:
    """One panel per metric against t; the best t and the kept metric's threshold marked."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    names = list(result["base_metrics"])
    ts = [r["t"] for r in result["rows"]]
    fig, axes = plt.subplots(len(names), 1, figsize=(6, 2.2 * len(names)), sharex=True)
    axes = [axes] if len(names) == 1 else list(axes)
    for ax, name in zip(axes, names, strict=True):
        ax.plot(ts, [r[name] for r in result["rows"]], marker="o")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if name == result["objective"]["keep"]:
            ax.axhline(result["objective"]["threshold"], color="tab:red", ls=":", label="keep")
            ax.legend(loc="best", fontsize="small")
        if result["best_t"] is not None:
            ax.axvline(result["best_t"], color="tab:green", ls="--")
    axes[-1].set_xlabel("t (0 = base, 1 = tuned)")
    fig.suptitle(result["objective"]["text"], fontsize="medium")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def write_results(result: Mapping[str, Any], out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    jsonio.write_json(os.path.join(out_dir, "sweep.json"), result)
    with atomic_open(os.path.join(out_dir, "sweep.md"), "w") as f:
        f.write(markdown_table(result))
    plot(result, os.path.join(out_dir, "sweep.png"))


def suite_metrics(
    domain_suite: str = "sample", general_suite: str = "general"
) -> dict[str, Metric]:
    """The default metrics: `domain` and `general`, each a suite's weighted average (a built-in
    suite name or a suite file), embeddings cached in the user cache."""
    suites = {"domain": load_suite(domain_suite), "general": load_suite(general_suite)}
    return SuiteScores(suites, cache_dir=str(cache_dir() / "embeddings")).metrics()

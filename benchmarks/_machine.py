"""Shared helpers of the benchmarks: the machine description, pinning threads, waiting for a
quiet machine, CPU contention during a timed section, timers, synthetic labelled pairs, and a
small harness that builds one jitted training step the way `compass_jax.trainer` does.

Not a benchmark itself; the scripts import it (it lives next to them, so running
`python benchmarks/<script>.py` from the repository root finds both it and `compass_jax`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from compass_jax.machine import (  # noqa: E402  (re-exported for the scripts)
    cpu_description,
    load_average,
    machine_info,
    meminfo_gib,
)

__all__ = ["cpu_description", "load_average", "machine_info", "meminfo_gib"]


# ---------------------------------------------------------------------------------------------
# Logging, machine, load
# ---------------------------------------------------------------------------------------------


def logger(tag: str) -> Callable[[str], None]:
    def log(message: str) -> None:
        print(f"[{tag}] {message}", file=sys.stderr, flush=True)

    return log


def emit(report: dict[str, Any], out: str | None = None) -> None:
    """The report as indented JSON on stdout (and in `out`, written atomically)."""
    text = json.dumps(report, indent=2, default=_jsonable)
    print(text, flush=True)
    if out:
        tmp = f"{out}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        os.replace(tmp, out)


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def add_quiet_arguments(p) -> None:
    """`--max-load` / `--max-wait-s` (what `wait_for_quiet` takes) and `--out`."""
    p.add_argument(
        "--max-load",
        type=float,
        default=None,
        help="wait until the 1-min load average is below this before starting",
    )
    p.add_argument("--max-wait-s", type=float, default=1800)
    p.add_argument("--out", default=None, help="also write the JSON here")


def pin_threads(threads: int | None) -> str:
    """Restrict the process to `threads` CPUs before JAX starts (XLA sizes its thread pool from
    the schedulable CPUs); says what it did, for the report. None or enough threads: no change."""
    cpus = sorted(os.sched_getaffinity(0))
    if threads is None or threads >= len(cpus):
        return (
            f"threads ({threads or len(cpus)}) >= schedulable CPUs ({len(cpus)}): no affinity "
            "change; XLA's CPU client uses one intra-op thread per schedulable CPU"
        )
    os.sched_setaffinity(0, cpus[:threads])
    return f"process pinned to CPUs {cpus[:threads]} (sched_setaffinity) so XLA uses {threads}"


def wait_for_quiet(max_load: float | None, max_wait_s: float, log: Callable[[str], None]):
    """Sleep until the 1-minute load average drops below `max_load` (None: do not wait).
    Returns what happened, for the report; never fails (a busy machine is reported, not fatal)."""
    if max_load is None:
        return {"waited_s": 0.0, "load_average": load_average(), "quiet": None}
    start = time.time()
    while os.getloadavg()[0] >= max_load and time.time() - start < max_wait_s:
        log(f"load average {load_average()} >= {max_load}; waiting for a quieter machine")
        time.sleep(20)
    quiet = os.getloadavg()[0] < max_load
    return {
        "waited_s": round(time.time() - start, 1),
        "load_average": load_average(),
        "quiet": quiet,
    }


def cpu_snapshot() -> tuple[float, float, float, float]:
    """(wall s, machine busy CPU s, steal s, this process's CPU s incl. children) from
    /proc/stat."""
    with open("/proc/stat", encoding="utf-8") as f:
        user, nice, system, _, _, irq, softirq, steal = map(int, f.readline().split()[1:9])
    hz = os.sysconf("SC_CLK_TCK")
    own = os.times()
    busy = (user + nice + system + irq + softirq) / hz
    mine = own.user + own.system + own.children_user + own.children_system
    return time.perf_counter(), busy, steal / hz, mine


def contention_since(start: tuple[float, float, float, float]) -> dict[str, float]:
    """CPU used by other processes (and stolen by the hypervisor) since `start`, as a share of
    all CPUs' time: well above 0 means the timings were disturbed by other work."""
    end = cpu_snapshot()
    wall, busy, steal, own = (b - a for a, b in zip(start, end, strict=True))
    # /proc/stat counts every CPU of the machine, not only those this process may use.
    capacity = max(wall * (os.cpu_count() or 1), 1e-9)
    return {
        "wall_s": round(wall, 1),
        "other_processes_cpu_share": round(max(0.0, busy - own) / capacity, 3),
        "steal_share": round(steal / capacity, 3),
        "load_average_at_end": load_average(),
    }


def wall_times(fn: Callable[[], Any], repeats: int) -> list[float]:
    """Wall seconds of `repeats` calls of `fn` (the caller warms up)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def gflops(flop: float, seconds: float) -> float:
    return round(flop / seconds / 1e9, 2)


class Timer:
    """Wall and this process's CPU seconds (all threads) of a `with` block. On a shared machine
    the CPU seconds move much less with other people's load than the wall time does."""

    def __enter__(self) -> Timer:
        t = os.times()
        self._wall, self._cpu = time.perf_counter(), t.user + t.system
        return self

    def __exit__(self, *exc) -> None:
        t = os.times()
        self.wall = time.perf_counter() - self._wall
        self.cpu = t.user + t.system - self._cpu


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median over rounds of `a[i] / b[i]`: contenders timed back to back in the same round see
    the same machine load, so per-round ratios cancel most of its drift."""
    return round(statistics.median(x / y for x, y in zip(a, b, strict=True)), 4)


def summarize(times: Sequence[float]) -> dict[str, Any]:
    return {
        "median_s": round(statistics.median(times), 4),
        "min_s": round(min(times), 4),
        "max_s": round(max(times), 4),
        "times_s": [round(t, 4) for t in times],
    }


# ---------------------------------------------------------------------------------------------
# Synthetic labelled pairs
# ---------------------------------------------------------------------------------------------

CATEGORIES = (
    "running shoes",
    "phone case",
    "water bottle",
    "frying pan",
    "wireless earbuds",
    "backpack",
    "rice cooker",
    "face serum",
    "yoga mat",
    "smart watch",
    "power bank",
    "desk lamp",
    "gaming mouse",
    "baby diapers",
    "sunscreen",
    "cotton t-shirt",
    "air fryer",
    "umbrella",
    "coffee grinder",
    "bike helmet",
    "sleeping bag",
    "hair dryer",
    "mechanical keyboard",
    "kettle",
)
ADJECTIVES = (
    "red",
    "blue",
    "black",
    "white",
    "light",
    "large",
    "small",
    "cheap",
    "new",
    "waterproof",
    "premium",
    "portable",
    "original",
    "foldable",
    "ergonomic",
    "organic",
    "wooden",
    "steel",
)
BRANDS = (
    "acme",
    "zenith",
    "orbit",
    "nova",
    "pico",
    "terra",
    "lumen",
    "vista",
    "kappa",
    "ion",
    "quill",
    "sol",
    "delta",
    "maru",
    "aster",
    "brio",
)
EXTRAS = (
    "free shipping",
    "official store",
    "1 year warranty",
    "pack of 3",
    "2024 edition",
    "with gift box",
    "ready stock",
    "size S M L XL",
    "100% authentic",
    "bundle deal",
)


def make_pairs(
    path: str | os.PathLike, n: int = 2048, seed: int = 0, min_words: int = 0
) -> pathlib.Path:
    """A JSONL of contrastive records in two tasks, like `tests/train_fixtures.make_pairs` but
    with more variety: `retrieval` (query -> product title, one hard negative: the same brand's
    title in another category, no label) and `classification` (title -> category name, labelled,
    so many examples share a positive text: the case CAM exists for). Natural lengths are short
    (about 8-20 tokens); `min_words` > 0 lengthens every text with product-description words to at
    least that many words (each at least one token), so that texts fill a fixed token length."""
    rng = np.random.default_rng(seed)
    vocabulary = [w for phrase in ADJECTIVES + EXTRAS + CATEGORIES for w in phrase.split()]

    def lengthen(text: str) -> str:
        missing = min_words - len(text.split())
        return text if missing <= 0 else f"{text} {' '.join(rng.choice(vocabulary, missing))}"

    lines = []
    for i in range(n):
        c = int(rng.integers(len(CATEGORIES)))
        other = (c + 1 + int(rng.integers(len(CATEGORIES) - 1))) % len(CATEGORIES)
        adj = rng.choice(ADJECTIVES, 3, replace=False)
        brand, extra = rng.choice(BRANDS), rng.choice(EXTRAS)
        title = f"{brand} {adj[0]} {adj[1]} {CATEGORIES[c]} {adj[2]} {extra} #{i}"
        if i % 2:
            record = {
                "query": f"{adj[0]} {CATEGORIES[c]} by {brand}",
                "positive": title,
                "negatives": [f"{brand} {adj[0]} {CATEGORIES[other]} {extra}"],
                "task": "retrieval",
            }
        else:
            record = {
                "query": title,
                "positive": CATEGORIES[c],
                "negatives": [CATEGORIES[other]],
                "label": c,
                "task": "classification",
            }
        if min_words:
            record["query"], record["positive"] = (
                lengthen(record["query"]),
                lengthen(record["positive"]),
            )
            record["negatives"] = [lengthen(t) for t in record["negatives"]]
        lines.append(json.dumps({**record, "lang": "en"}))
    path = pathlib.Path(path)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tokenized_batches(
    data_path, tokenizer, *, batch_size: int, count: int, seq: int, task: str, negatives: int = 1
) -> list[dict[str, np.ndarray]]:
    """`count` consecutive global batches of one task through the library's data path
    (`PairReader` -> `tokenize_batch`), every text padded/truncated to `seq` tokens."""
    from compass_jax.data.mixture import PairReader
    from compass_jax.data.pairs import read_records, tokenize_batch

    records = read_records(data_path)
    tasks = sorted({r.task for r in records})
    reader = PairReader(
        records, batch_size=batch_size, seed=0, task_weights={t: float(t == task) for t in tasks}
    )
    out = []
    for _ in range(count):
        got, rows = reader.next_batch()
        assert got == task, (got, task)
        out.append(
            tokenize_batch(
                rows,
                tokenizer,
                query_prefix="",
                document_prefix="",
                query_length=seq,
                document_length=seq,
                num_negatives=negatives,
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# One jitted training step, built as the trainer builds it
# ---------------------------------------------------------------------------------------------


def token_shares(batch: dict[str, np.ndarray], mini_batch: int) -> dict[str, float]:
    """Share of the padded `[b, l]` token grid that holds real tokens, and the share a runtime
    computes when it trims each mini-batch to its longest text (sentence-transformers' cached
    losses do), averaged over the three towers."""
    real, trimmed = [], []
    for tower in ("query", "positive", "negative"):
        mask = batch[f"{tower}_mask"]
        real.append(mask.mean())
        lengths = mask.sum(1)
        widest = [
            lengths[i : i + mini_batch].max() * len(lengths[i : i + mini_batch])
            for i in range(0, len(lengths), mini_batch)
        ]
        trimmed.append(sum(widest) / mask.size)
    return {
        "real_token_share": round(float(np.mean(real)), 3),
        "trimmed_mini_batch_share": round(float(np.mean(trimmed)), 3),
    }


def load(model: str):
    """`(model_cfg, params, model_dir, pooling)` of a model argument (bundled name or dir)."""
    from compass_jax.interop.st_package import read_settings
    from compass_jax.resolve import load_model

    model_cfg, params, model_dir = load_model(model)
    pooling = read_settings(model_dir, model_cfg.arch, default_max_length=512).pooling
    return model_cfg, params, model_dir, pooling


@dataclasses.dataclass
class Harness:
    """A training state and its jitted step on a one-device (or given) mesh."""

    spec: Any
    mesh: Any
    state: Any
    step: Any
    compiled: Any = None

    @classmethod
    def create(
        cls,
        model_cfg,
        params,
        pooling: str,
        *,
        batch_size: int,
        chunk: int | None,
        seq: int,
        loss,
        dtype: str = "float32",
        negatives: int = 1,
        mesh=None,
        learning_rate: float = 2e-5,
        loss_block: tuple[int, int] = (128, 1024),
        min_sharded_elements: int = 2**16,
    ) -> Harness:
        import jax

        from compass_jax import sharding, train
        from compass_jax.experiment import DataConfig, MeshConfig, TrainConfig
        from compass_jax.optim import OptimConfig

        cfg = TrainConfig(
            model="(benchmark)",
            dtype=dtype,
            data=DataConfig(query_length=seq, document_length=seq, num_negatives=negatives),
            losses={"default": loss},
            # Constant learning rate from step 0, like the peers' plain AdamW loops.
            optim=OptimConfig(learning_rate=learning_rate, warmup_steps=0, schedule="constant"),
            mesh=MeshConfig(data=1, fsdp=1),
            batch_size=batch_size,
            gradcache_chunk=chunk,
            loss_block=loss_block,
            steps=1000,
        )
        mesh = mesh or sharding.make_mesh(1, 1, devices=jax.devices()[:1])
        spec = train.spec_for(cfg, model_cfg, pooling, "default")
        state, shardings = train.init_state(
            params, spec, mesh, seed=0, min_elements=min_sharded_elements
        )
        return cls(spec, mesh, state, train.make_train_step(spec, mesh, shardings))

    def put(self, local: dict[str, np.ndarray]) -> dict[str, Any]:
        import jax

        from compass_jax import sharding

        s = sharding.batch_sharding(self.mesh)
        return {k: jax.device_put(v, s) for k, v in local.items()}

    def compile(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Compile ahead of time for `batch`'s shapes; returns seconds and XLA's buffer sizes."""
        tic = time.perf_counter()
        self.compiled = self.step.lower(self.state, batch).compile()
        seconds = time.perf_counter() - tic
        return {"compile_s": round(seconds, 2), **xla_memory(self.compiled)}

    def run(self, batch: dict[str, Any]) -> tuple[float, dict[str, float]]:
        """One step (state updated in place); `(wall seconds, scalar metrics)`."""
        import jax

        fn = self.compiled or self.step
        tic = time.perf_counter()
        self.state, metrics = fn(self.state, batch)
        jax.block_until_ready((self.state, metrics))
        seconds = time.perf_counter() - tic
        return seconds, {k: float(v) for k, v in jax.device_get(metrics).items()}


def xla_memory(compiled) -> dict[str, Any]:
    """XLA's buffer assignment of a compiled program (the live temporaries at its peak plus its
    arguments and outputs); known before running, so it also sizes programs too big to run."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        return {}
    if m is None:
        return {}
    arg, out, alias, temp = (
        int(getattr(m, f"{k}_size_in_bytes", 0)) for k in ("argument", "output", "alias", "temp")
    )
    return {
        "xla_temp_bytes": temp,
        "xla_argument_bytes": arg,
        "xla_output_bytes": out,
        "xla_total_bytes": arg + out - alias + temp,
    }


# ---------------------------------------------------------------------------------------------
# FLOP counts
# ---------------------------------------------------------------------------------------------


def matmul_params(params) -> int:
    """Parameters that take part in matmuls: every Dense `kernel` (embedding tables are
    gathers, norms and biases are elementwise)."""
    from compass_jax import tree

    return sum(
        int(np.prod(np.shape(v))) for p, v in tree.flatten(params).items() if p.endswith(".kernel")
    )


def attention_forward_flops(model_cfg, seq: int, sequences: int) -> float:
    """`q k^T` and `p v` of every layer, forward only; causal attention counts the half of the
    score matrix it computes (as MaxText does)."""
    per_seq = 4 * seq * seq * model_cfg.num_heads * model_cfg.head_dim * model_cfg.num_layers
    return per_seq * sequences * (0.5 if model_cfg.causal else 1.0)


def step_flops(model_cfg, params, *, seq: int, sequences: int, gradcache: bool) -> dict[str, float]:
    """Model FLOPs of one training step (6 N per token + attention, forward and backward) and
    the hardware FLOPs the step really executes (GradCache adds one forward pass)."""
    n = matmul_params(params)
    tokens = seq * sequences
    attn = attention_forward_flops(model_cfg, seq, sequences)
    model = 6 * n * tokens + 3 * attn
    hardware = model + (2 * n * tokens + attn if gradcache else 0.0)
    return {"matmul_params": n, "tokens": tokens, "model_flops": model, "hardware_flops": hardware}

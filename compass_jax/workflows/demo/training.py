"""The demo's training runs: CAM contrastive training of the top layers and its ablation,
which differs in the masks only, each repeated over training seeds.

Seeds. The catalog, its split and so the evaluation items come from the demo's `--seed` alone
and stay fixed across training runs, so every run is scored on the same items and runs compare
item by item. Run `s` of `--seeds N` (s = 0 .. N-1) trains with seed `--seed + s`: the reader's
batch order (`DataConfig.seed`) and the dropout key (`TrainConfig.seed`); CAM and no-CAM of one
`s` share both, so they pair. Run 0 is the single run of `--seeds 1` (the same batches as the
demo before seeds existed), the one the merge sweep, the exports and the general suite use.
"""

from __future__ import annotations

import os

from compass_jax import jsonio
from compass_jax.workflows.demo.sizes import Size

ARMS = (("CAM", True), ("no-CAM", False))  # label, class and duplicate masks on


def run_dir(out: str, label: str, run: int, prefix: str = "train") -> str:
    """Where run `run` of arm `label` trains (`out/train-cam-seed0`, ...)."""
    return os.path.join(out, f"{prefix}-{label.lower().replace('-', '')}-seed{run}")


def train_config(
    base: str,
    train_path: str,
    size: Size,
    *,
    cam: bool,
    seed: int = 0,
    class_density: dict[str, float] | None = None,
):
    """The CAM run (`cam`) or its ablation on the demo's data: the top `size.trained_layers`
    layers of `base` train on a data-parallel mesh of every device, GradCache in chunks, with
    the model's dropout; `seed` sets the batch order and the dropout key. `class_density`
    draws those tasks' batches at a same-class share (`DataConfig.class_density`)."""
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
            class_density=dict(class_density or {}),
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
        # Unpacked: the demo's texts nearly fill its 24 tokens (0.61 of them real; packed 0.74),
        # while packed towers' row counts vary by task and batch (9 programs to compile instead
        # of 1 at --size small): on 2 cores the compiles would cost more than packing saves.
        pack=False,
        dropout=True,
        steps=size.steps,
        seed=seed,
        checkpoint_every=size.steps,
        keep_checkpoints=1,
    )


def train(cfg, workdir: str, *, progress: bool = True) -> list[dict]:
    """Train in `workdir` (resuming); the metrics history from the workdir's log, so a resumed
    run reports the whole curve. The workdir itself is the trained model's name."""
    from compass_jax import trainer

    trainer.run(cfg, workdir, progress=progress)
    return jsonio.read_jsonl(os.path.join(workdir, "metrics.jsonl"))

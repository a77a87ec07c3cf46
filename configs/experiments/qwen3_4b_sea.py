"""The paper-scale run: a Qwen3-Embedding-4B backbone (2560-d, last-token pooling) trained with
CAM on a TPU slice or a multi-GPU host, bf16 compute over fp32 master weights, FSDP.

    compass-jax train --config configs/experiments/qwen3_4b_sea.py --workdir gs://.../qwen3-sea \
        --set model=/path/to/Qwen3-Embedding-4B --set data.path=/data/sea_train.jsonl

`model` may be a hub id (Qwen/Qwen3-Embedding-4B) on machines with a network. Global batch
16384 through GradCache chunks of 512 rows (split over every device of the mesh); the loss is
tiled so no device ever holds the 16k x 32k score matrix.
"""

from compass_jax.experiment import DataConfig, MeshConfig, TrainConfig
from compass_jax.losses import LossSettings
from compass_jax.optim import OptimConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        model="Qwen/Qwen3-Embedding-4B",
        dtype="bfloat16",
        data=DataConfig(path="", query_length=128, document_length=256, num_negatives=1),
        losses={
            "default": LossSettings(temperature=0.02, margin=0.1),
            "classification": LossSettings(temperature=0.05),
            "clustering": LossSettings(temperature=0.05),
        },
        optim=OptimConfig(learning_rate=1e-5, warmup_steps=200, weight_decay=0.01),
        mesh=MeshConfig(data=1, fsdp=-1),
        batch_size=16384,
        gradcache_chunk=512,
        loss_block=(256, 4096),
        steps=5000,
        checkpoint_every=250,
    )

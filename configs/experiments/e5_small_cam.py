"""CAM fine-tuning of the bundled multilingual-e5-small on a JSONL of contrastive records.

    compass-jax train --config configs/experiments/e5_small_cam.py --workdir runs/e5 \
        --set data.path=train.jsonl

Sized for a CPU or one GPU: global batch 256 through GradCache chunks of 64, the bottom half
of the encoder frozen (it holds most of the multilingual lexical knowledge, and freezing it
halves the backward pass).
"""

from compass_jax.experiment import DataConfig, MeshConfig, TrainConfig
from compass_jax.losses import LossSettings
from compass_jax.optim import OptimConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        model="multilingual-e5-small",
        dtype="float32",
        data=DataConfig(path="", query_length=32, document_length=64, num_negatives=1),
        losses={
            "default": LossSettings(temperature=0.02),
            # Classification / clustering batches: many in-batch items share a class, the false
            # negatives CAM removes.
            "classification": LossSettings(temperature=0.05),
            "clustering": LossSettings(temperature=0.05),
        },
        optim=OptimConfig(
            learning_rate=2e-5,
            warmup_steps=50,
            frozen=(r"^embeddings\.", r"^layers\.[0-5]\."),
        ),
        mesh=MeshConfig(data=-1, fsdp=1),
        batch_size=256,
        gradcache_chunk=64,
        steps=1000,
        checkpoint_every=200,
    )

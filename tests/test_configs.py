"""Experiment configs load, and `--set` overrides are type-checked."""

import pathlib

import pytest

from compass_jax import configio
from compass_jax.config import ConfigError
from compass_jax.experiment import TrainConfig

CONFIGS = sorted((pathlib.Path(__file__).parent.parent / "configs" / "experiments").glob("*.py"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_experiment_configs_load(path):
    cfg = configio.load(path, TrainConfig)
    assert cfg.batch_size % (cfg.gradcache_chunk or cfg.batch_size) == 0
    assert "default" in cfg.losses


def test_overrides_are_typed():
    cfg = configio.load(CONFIGS[0], TrainConfig)
    cfg = configio.override(
        cfg, ["optim.learning_rate=1e-4", "batch_size=64", "losses.retrieval.temperature=0.07",
              "gradcache_chunk=null", "optim.frozen=[\"^embeddings\"]", "data.path=x.jsonl"],
    )  # fmt: skip
    assert cfg.optim.learning_rate == 1e-4 and cfg.batch_size == 64
    assert cfg.loss_for("retrieval").temperature == 0.07
    assert cfg.loss_for("retrieval").class_mask  # the rest comes from "default"
    assert cfg.gradcache_chunk is None and cfg.optim.frozen == ("^embeddings",)
    assert cfg.data.path == "x.jsonl"
    with pytest.raises(ConfigError, match="batch_size: expected int"):
        configio.override(cfg, ["batch_size=big"])
    with pytest.raises(ConfigError, match="has no field 'bach_size'"):
        configio.override(cfg, ["bach_size=3"])
    with pytest.raises(ConfigError, match="expected key=value"):
        configio.override(cfg, ["batch_size"])

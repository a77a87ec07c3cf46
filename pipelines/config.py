"""Build configuration: typed frozen dataclasses, read from a JSON file (or a Python file with
`get_config()` returning a dict or a `BuildConfig`), with `--set a.b=value` overrides. Reading,
overrides and the checks of every field (unknown keys, types, finiteness, the ranges declared
below) are `compass_jax.configio`'s; this module holds the schema and the cross-field checks."""

from __future__ import annotations

import dataclasses
import os
from typing import Literal

from compass_jax import configio
from compass_jax.configio import ConfigError, Count, Fraction, NonNegativeInt
from pipelines.filters.langid import DEFAULT_LANGS
from pipelines.generate import GeneratorConfig
from pipelines.mining import MiningConfig
from pipelines.tasks.construct import TasksConfig
from pipelines.tasks.synthetic import SynthesisConfig
from pipelines.tasks.translated import TranslationConfig

__all__ = ["BuildConfig", "CatalogConfig", "ConfigError", "FilterConfig", "load_config"]

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "default.json")


@dataclasses.dataclass(frozen=True)
class CatalogConfig:
    paths: tuple[str, ...] = ()  # JSONL files or globs; relative paths are from the config file
    generate_size: Count = 20000  # product groups of the bundled catalog, when paths is empty
    generate_files: Count = 8
    langs: tuple[str, ...] = DEFAULT_LANGS
    on_invalid: Literal["error", "reject"] = "error"  # reject: bad lines go to the rejects files


@dataclasses.dataclass(frozen=True)
class FilterConfig:
    langid: bool = True
    langid_langs: tuple[str, ...] = DEFAULT_LANGS
    langid_min_chars: NonNegativeInt = 25
    langid_min_confidence: Fraction = 0.6
    langid_confusable: tuple[tuple[str, ...], ...] = (("id", "ms"),)
    langid_allow_english: bool = True  # product names are English in every SEA market
    min_chars: NonNegativeInt = 2
    max_query_chars: Count = 512
    max_positive_chars: Count = 4000
    script: bool = True
    min_script_share: Fraction = 0.3
    exact_dedup: bool = True
    near_dedup: bool = True
    near_dedup_threshold: Fraction = 0.9
    num_perm: Count = 64
    bands: Count = 8


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    seed: NonNegativeInt = 0
    partitions: Count = 16  # hash partitions of group_id: the unit of work and of output shards
    splits: dict[Literal["train", "validation", "test"], Fraction] = dataclasses.field(
        default_factory=lambda: {"train": 0.9, "validation": 0.05, "test": 0.05}
    )
    version: str = "1.0.0"
    catalog: CatalogConfig = dataclasses.field(default_factory=CatalogConfig)
    tasks: TasksConfig = dataclasses.field(default_factory=TasksConfig)
    generator: GeneratorConfig = dataclasses.field(default_factory=GeneratorConfig)
    synthesis: SynthesisConfig | None = dataclasses.field(default_factory=SynthesisConfig)
    translation: TranslationConfig | None = dataclasses.field(default_factory=TranslationConfig)
    filters: FilterConfig = dataclasses.field(default_factory=FilterConfig)
    mining: MiningConfig | None = dataclasses.field(default_factory=MiningConfig)


def load_config(path: str | os.PathLike | None = None, overrides=()) -> BuildConfig:
    """The config at `path` (default: the bundled catalog build), with `key=value` overrides."""
    path = os.fspath(path or DEFAULT_CONFIG)
    cfg = configio.load(path, BuildConfig, overrides)
    base = os.path.dirname(os.path.abspath(path))
    paths = tuple(p if os.path.isabs(p) else os.path.join(base, p) for p in cfg.catalog.paths)
    cfg = dataclasses.replace(cfg, catalog=dataclasses.replace(cfg.catalog, paths=paths))
    if not cfg.splits.get("train"):
        raise ConfigError(f"{path}: splits: a train fraction above 0 is needed")
    return cfg

"""Build configuration: typed frozen dataclasses, read from a JSON file (or a Python file with
`get_config()` returning a dict), with `--set a.b=value` overrides. Unknown keys are errors
that name the file and the key, so a typo never silently falls back to a default."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import types
import typing
from typing import Any

from pipelines.filters.langid import DEFAULT_LANGS
from pipelines.generate import GeneratorConfig
from pipelines.mining import MiningConfig
from pipelines.tasks.construct import TasksConfig
from pipelines.tasks.synthetic import SynthesisConfig
from pipelines.tasks.translated import TranslationConfig

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "default.json")


class ConfigError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class CatalogConfig:
    paths: tuple[str, ...] = ()  # JSONL files or globs; relative paths are from the config file
    generate_size: int = 20000  # product groups of the bundled catalog, when paths is empty
    generate_files: int = 8
    langs: tuple[str, ...] = DEFAULT_LANGS
    on_invalid: str = "error"  # error | reject (write bad lines to the rejects files)


@dataclasses.dataclass(frozen=True)
class FilterConfig:
    langid: bool = True
    langid_langs: tuple[str, ...] = DEFAULT_LANGS
    langid_min_chars: int = 25
    langid_min_confidence: float = 0.6
    langid_confusable: tuple[tuple[str, ...], ...] = (("id", "ms"),)
    langid_allow_english: bool = True  # product names are English in every SEA market
    min_chars: int = 2
    max_query_chars: int = 512
    max_positive_chars: int = 4000
    script: bool = True
    min_script_share: float = 0.3
    exact_dedup: bool = True
    near_dedup: bool = True
    near_dedup_threshold: float = 0.9
    num_perm: int = 64
    bands: int = 8


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    seed: int = 0
    partitions: int = 16  # hash partitions of group_id: the unit of work and of output shards
    splits: dict[str, float] = dataclasses.field(
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


def _build(cls, raw: Any, where: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected an object, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown} (known: {sorted(names)})")
    return cls(**{k: _value(hints[k], v, f"{where}.{k}") for k, v in raw.items()})


def _value(hint, value, where: str):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return tuple(_value(inner, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object, got {value!r}")
        return {str(k): _value(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and type(value) is not hint:
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def to_dict(cfg: Any) -> Any:
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, tuple | list):
        return [to_dict(v) for v in cfg]
    return cfg


def _set(raw: dict, dotted: str, text: str) -> None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    *parents, last = dotted.split(".")
    node = raw
    for name in parents:
        if node.get(name) is None:
            node[name] = {}
        node = node[name]
    node[last] = value


def load_config(path: str | os.PathLike | None = None, overrides=()) -> BuildConfig:
    """The config at `path` (default: the bundled catalog build), with `key=value` overrides."""
    path = os.fspath(path or DEFAULT_CONFIG)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such config file")
    if path.endswith(".py"):
        spec = importlib.util.spec_from_file_location("compass_jax_data_config", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        raw = module.get_config()
    else:
        with open(path, encoding="utf-8") as f:
            try:
                raw = json.load(f)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    raw = json.loads(json.dumps(raw))  # a private copy to apply overrides to
    for assignment in overrides:
        key, sep, text = assignment.partition("=")
        if not sep:
            raise ConfigError(f"--set {assignment!r}: expected key=value")
        _set(raw, key.strip(), text.strip())
    base = os.path.dirname(os.path.abspath(path))
    catalog = raw.get("catalog") or {}
    if catalog.get("paths"):
        catalog["paths"] = [
            p if os.path.isabs(p) else os.path.join(base, p) for p in catalog["paths"]
        ]
    cfg = _build(BuildConfig, raw, path)
    _check(cfg, path)
    return cfg


def _check(cfg: BuildConfig, where: str) -> None:
    if cfg.partitions < 1:
        raise ConfigError(f"{where}: partitions must be >= 1")
    if set(cfg.splits) - {"train", "validation", "test"} or not cfg.splits.get("train"):
        raise ConfigError(f"{where}: splits must be train/validation/test fractions, with train")
    if cfg.catalog.on_invalid not in ("error", "reject"):
        raise ConfigError(f"{where}: catalog.on_invalid must be 'error' or 'reject'")

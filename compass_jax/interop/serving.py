"""How vLLM serves an exported directory as an embedding model: its command line, the equivalent
Python (`LLM(...)` keyword arguments) and the prompts vLLM will not add. Used by the model card
`save_hf` writes and by `compass-jax serve-command`.

vLLM spellings (vLLM >= 0.16): `--runner pooling`; `--convert embed` for a `*ForCausalLM`
architecture (Qwen3), which vLLM does not convert to an embedder on its own; `--pooler-config`
(Python: `PoolerConfig`) with `pooling_type` MEAN | CLS | LAST and `use_activation`, which is
L2 normalisation for the embed task (older vLLM calls it `normalize`); Matryoshka support from
`is_matryoshka` / `matryoshka_dimensions` in config.json (which exports with Matryoshka
dimensions declare), else through `--hf-overrides`, after which requests may pass `dimensions`.
FP8 checkpoints need no flag: vLLM reads `quantization_config` from config.json.
vLLM does not add sentence-transformers prompts, so the query/document prefixes are returned too.
"""

from __future__ import annotations

import json
import os
import shlex

from compass_jax import jsonio
from compass_jax.config import read_hf_config
from compass_jax.interop.st_package import read_settings

_POOLING = {"mean": "MEAN", "cls": "CLS", "last": "LAST"}


def _read_json(path: str) -> dict:
    try:
        return jsonio.read_json(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: not found; is this an exported directory?") from None


def _py(value) -> str:
    """A Python literal with double-quoted strings (how the snippet would be typed)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_py(k)}: {_py(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_py(v) for v in value) + "]"
    return repr(value)


def invocation(model_dir: str | os.PathLike, *, shown: str | None = None, dim: int | None = None):
    """`{"cli": str, "python": str, "prompts": {...}, "pooler_config": {...}, ...}` for a
    directory; `shown` replaces the directory's path in the printed text."""
    model_dir = os.fspath(model_dir)
    if not os.path.isdir(model_dir):
        raise NotADirectoryError(f"{model_dir}: not a directory; expected an exported model")
    hf = _read_json(os.path.join(model_dir, "config.json"))
    cfg = read_hf_config(model_dir)
    info_path = os.path.join(model_dir, "export_info.json")
    info = _read_json(info_path) if os.path.isfile(info_path) else {}
    positions = cfg.max_position_embeddings
    positions -= (cfg.pad_token_id or 1) + 1 if cfg.arch == "xlm-roberta" else 0
    settings = read_settings(model_dir, cfg.arch, default_max_length=positions)
    architecture = (hf.get("architectures") or ["?"])[0]
    dtype = hf.get("torch_dtype") or hf.get("dtype") or "auto"
    pooler = {"pooling_type": _POOLING[settings.pooling], "use_activation": settings.normalize}
    # Declared in config.json (vLLM reads it there), or only in an older export's info file.
    dims = list(cfg.matryoshka_dims) or info.get("matryoshka_dimensions")
    if dim is not None:
        if dims and dim not in dims:
            raise ValueError(f"--dim {dim}: the export supports {dims}")
        pooler["dimensions"] = dim
    overrides = {}
    if not cfg.is_matryoshka and dims:
        overrides = {"is_matryoshka": True, "matryoshka_dimensions": dims}
    elif not cfg.is_matryoshka and dim is not None:  # vLLM refuses `dimensions` otherwise
        overrides = {"is_matryoshka": True}
    convert = None if architecture.endswith("Model") else "embed"
    path = shown or model_dir
    cli = ["vllm", "serve", path, "--runner", "pooling"]
    cli += ["--convert", convert] if convert else []
    cli += ["--dtype", dtype, "--max-model-len", str(settings.max_length)]
    cli += ["--pooler-config", json.dumps(pooler)]
    cli += ["--hf-overrides", json.dumps(overrides)] if overrides else []
    kwargs = {"model": path, "runner": "pooling", "convert": convert, "dtype": dtype}
    kwargs = {k: _py(v) for k, v in kwargs.items() if v is not None}
    kwargs["max_model_len"] = str(settings.max_length)
    kwargs["pooler_config"] = (
        f"PoolerConfig({', '.join(f'{k}={_py(v)}' for k, v in pooler.items())})"
    )
    if overrides:
        kwargs["hf_overrides"] = _py(overrides)
    query = settings.prompt_text("query") if settings.prompts else ""
    document = settings.prompt_text("document") if settings.prompts else ""
    python = "\n".join(
        [
            "from vllm import LLM",
            "from vllm.config import PoolerConfig",
            "",
            "llm = LLM(",
            *(f"    {k}={v}," for k, v in kwargs.items()),
            ")",
            f"outputs = llm.embed([{_py(query + 'sepatu lari pria')}])",
            "vectors = [o.outputs.embedding for o in outputs]",
        ]
    )
    llm_kwargs = {"model": model_dir, "runner": "pooling", "convert": convert, "dtype": dtype}
    llm_kwargs = {k: v for k, v in llm_kwargs.items() if v is not None}
    llm_kwargs["max_model_len"] = settings.max_length
    llm_kwargs |= {"hf_overrides": overrides} if overrides else {}
    return {
        "cli": " ".join(shlex.quote(c) for c in cli),
        "llm_kwargs": llm_kwargs,
        "python": python,
        "prompts": {"query": query, "document": document},
        "pooler_config": pooler,
        "hf_overrides": overrides,
        "quantization": (hf.get("quantization_config") or {}).get("quant_method"),
    }

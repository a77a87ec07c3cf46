"""vLLM serving of exported directories (bf16 and FP8) against `compass-jax embed`: agreement
and throughput. GPU only: it prints `{"skipped": reason}` and exits 0 when vLLM cannot be
imported or no CUDA GPU is visible.

Steps: export the model (default: the bundled multilingual-e5-small) twice with `save_hf`, bf16
and FP8 (or take `--bf16-dir` / `--fp8-dir`); embed `--n` texts (the bundled multilingual sample
with its query/document prompts, cycled) with compass-jax's `Encoder` on the bf16 directory,
then with vLLM's offline `LLM.embed` on each directory, configured as `compass-jax
serve-command` prints it; report texts/s for each and the cosine of every vLLM embedding to the
compass-jax one (mean, 1st percentile, minimum), per directory.

    python benchmarks/vllm_serving.py [--model multilingual-e5-small] [--n 4096]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time

import numpy as np

from compass_jax import jsonio


def skip_reason() -> str | None:
    try:
        import vllm  # noqa: F401
    except Exception as e:  # ImportError, or a broken CUDA install raising anything else
        return f"vllm is not importable ({type(e).__name__}: {e})"
    try:
        import torch
    except ImportError:
        return "torch is not importable"
    if not torch.cuda.is_available():
        return "no CUDA GPU visible"
    return None


def _texts(n: int) -> list[str]:
    from compass_jax.fp8_quality import load_calibration

    texts = []
    for r in load_calibration():
        texts += [("query", r["query"]), ("document", r["title"])]
    return [texts[i % len(texts)] for i in range(n)]


def _cosines(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    c = np.sum(a * b, axis=1)
    return {"mean": float(c.mean()), "p1": float(np.percentile(c, 1)), "min": float(c.min())}


def _vllm_embed(model_dir: str, texts: list[str], memory: float) -> tuple[np.ndarray, float]:
    import torch
    from vllm import LLM
    from vllm.config import PoolerConfig

    from compass_jax.interop.serving import invocation

    spec = invocation(model_dir)
    try:
        pooler = PoolerConfig(**spec["pooler_config"])
    except TypeError:  # vLLM < 0.16 spells `use_activation` as `normalize`
        pooler = dict(spec["pooler_config"])
        pooler["normalize"] = pooler.pop("use_activation")
        pooler = PoolerConfig(**pooler)
    llm = LLM(**spec["llm_kwargs"], pooler_config=pooler, gpu_memory_utilization=memory)
    llm.embed(texts[:64])  # warm-up: CUDA graphs, kernels
    start = time.perf_counter()
    outputs = llm.embed(texts)
    seconds = time.perf_counter() - start
    vectors = np.array([o.outputs.embedding for o in outputs], np.float32)
    del llm
    gc.collect()
    torch.cuda.empty_cache()
    return vectors, seconds


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="multilingual-e5-small")
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--bf16-dir", default=None)
    parser.add_argument("--fp8-dir", default=None)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.4)
    args = parser.parse_args()
    reason = skip_reason()
    if reason:
        result = {"benchmark": "vllm_serving", "skipped": reason}
        print(jsonio.dumps(result))
        return result

    import jax

    from compass_jax.encoder import Encoder
    from compass_jax.resolve import load_model
    from compass_jax.workflows.export import export_params

    with tempfile.TemporaryDirectory() as tmp:
        dirs = {"bf16": args.bf16_dir, "fp8": args.fp8_dir}
        if None in dirs.values():
            cfg, params, source = load_model(args.model)
            for name, fp8 in (("bf16", False), ("fp8", True)):
                if dirs[name] is None:
                    out = os.path.join(tmp, name)
                    dirs[name] = str(
                        export_params(cfg, params, out, tokenizer_from=source, fp8=fp8)
                    )
        pairs = _texts(args.n)
        encoder = Encoder.load(dirs["bf16"], dtype="bfloat16")
        prefixed = [encoder.settings.prompt_text(p) + t for p, t in pairs]
        encoder.encode(prefixed[:256], batch_size=64)  # warm-up: compile the bucket shapes
        start = time.perf_counter()
        ours = encoder.encode(prefixed, batch_size=64)
        ours_s = time.perf_counter() - start
        result = {
            "benchmark": "vllm_serving",
            "model": args.model,
            "n": args.n,
            "compass_jax_bf16": {
                "texts_per_s": round(args.n / ours_s, 1),
                "device": str(jax.devices()[0]),
            },
        }
        for name, path in dirs.items():
            vectors, seconds = _vllm_embed(path, prefixed, args.gpu_memory_utilization)
            result[f"vllm_{name}"] = {
                "texts_per_s": round(args.n / seconds, 1),
                "cosine_to_compass_jax": _cosines(vectors, ours),
            }
            print(f"vllm {name}: {args.n / seconds:.0f} texts/s", file=sys.stderr)
        result["fp8_speedup_vs_bf16"] = round(
            result["vllm_fp8"]["texts_per_s"] / result["vllm_bf16"]["texts_per_s"], 3
        )
    print(jsonio.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

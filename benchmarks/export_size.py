"""Export time and size, bf16 vs FP8, and FP8 embedding agreement, for one model (default: the
bundled multilingual-e5-small).

For each of bf16 and FP8 it times `save_hf` (from params in memory to a complete directory,
FP8 including its quality report) and sizes the result: the whole directory, the safetensors
weights, and the block linears alone (FP8: E4M3 weights plus float32 scales; bf16: the same
tensors in bf16), whose ratio is the FP8 target (<= 0.55). The peer is `transformers`'
`save_pretrained` of the same weights in bf16, timed in the same run.

Agreement: the FP8 report's JAX simulation (E4M3 weights, per-token E4M3 activations, bf16
compute) against bf16, per language, and, when `compressed-tensors` is installed, the FP8 files
as transformers + compressed-tensors run them (float32 compute) against the bf16 weights.

    python benchmarks/export_size.py [--model multilingual-e5-small] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

from compass_jax import jsonio


def _dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def _weights(path: str) -> dict[str, int]:
    from compass_jax.interop.fp8 import FP8_DTYPE as fp8
    from compass_jax.interop.safetensors_io import SafetensorsFile, checkpoint_files

    total = block_fp8 = block_as_bf16 = 0
    for file in checkpoint_files(path):
        f = SafetensorsFile(file)
        for key in f.names():
            total += f.nbytes(key)
            if f.dtype(key) == fp8:
                block_fp8 += f.nbytes(key) + f.nbytes(key + "_scale")
                block_as_bf16 += 2 * int(np.prod(f.shape(key)))
    return {"safetensors": total, "block_fp8": block_fp8, "block_bf16": block_as_bf16}


def _torch_agreement(fp8_dir: str, source: str) -> dict | None:
    try:
        import compressed_tensors  # noqa: F401
        import torch
        from transformers import AutoModel, AutoTokenizer
    except ImportError as e:
        return {"skipped": f"{e.name} not installed"}
    from compass_jax.fp8_quality import load_calibration

    records = load_calibration()
    texts = [f"query: {r['query']}" for r in records] + [f"passage: {r['title']}" for r in records]
    langs = np.array([r["lang"] for r in records] * 2)
    enc = AutoTokenizer.from_pretrained(fp8_dir, local_files_only=True)(
        texts, padding=True, return_tensors="pt"
    )

    def embed(model):
        with torch.no_grad():
            hidden = model(**enc).last_hidden_state
        m = enc["attention_mask"][..., None].float()
        v = ((hidden * m).sum(1) / m.sum(1)).numpy()
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    served = AutoModel.from_pretrained(fp8_dir, dtype=torch.float32, local_files_only=True)
    bf16 = AutoModel.from_pretrained(source, dtype=torch.bfloat16, local_files_only=True).float()
    cos = np.sum(embed(served) * embed(bf16), axis=1)
    return {
        "what": "transformers + compressed-tensors on the FP8 files vs bf16 weights (fp32 compute)",
        "mean": float(cos.mean()),
        "min": float(cos.min()),
        "per_language_mean": {
            lang: float(cos[langs == lang].mean()) for lang in sorted(set(langs))
        },
    }


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="multilingual-e5-small")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()

    from compass_jax.resolve import load_model
    from compass_jax.workflows.export import export_params

    cfg, params, source = load_model(args.model)
    # The FP8 export loads the tokenizer (transformers); import it before timing anything.
    from compass_jax.interop.tokenizer import load_tokenizer

    load_tokenizer(source)
    result: dict = {"model": args.model, "arch": cfg.arch, "layers": cfg.num_layers}
    with tempfile.TemporaryDirectory() as tmp:
        for name, fp8 in (("bf16", False), ("fp8", True)):
            start = time.perf_counter()
            out = export_params(
                cfg, params, os.path.join(tmp, name), tokenizer_from=source, fp8=fp8
            )
            seconds = time.perf_counter() - start
            result[name] = {"export_seconds": round(seconds, 2), "dir_bytes": _dir_bytes(out)}
            result[name] |= _weights(out)
            print(f"{name}: {seconds:.1f} s", file=sys.stderr)
        bf16, q = result["bf16"], result["fp8"]
        result["fp8_block_weight_ratio"] = round(q["block_fp8"] / q["block_bf16"], 4)
        result["fp8_safetensors_ratio"] = round(q["safetensors"] / bf16["safetensors"], 4)
        with open(os.path.join(tmp, "fp8", "fp8_report.json"), encoding="utf-8") as f:
            report = json.load(f)
        result["fp8_agreement_jax"] = {
            "what": report["simulation"] + f", vs bf16 ({report['compute_dtype']} compute)",
            **report["cosine"]["all"],
            "per_language_mean": {
                k: v["mean"] for k, v in report["cosine"]["per_language"].items()
            },
            "weight_relative_error_mean": report["weights"]["mean"],
            "weight_relative_error_max": report["weights"]["max"],
        }
        result["fp8_agreement_torch"] = _torch_agreement(os.path.join(tmp, "fp8"), str(source))
        try:  # the peer: transformers writing the same bf16 weights
            import torch
            from transformers import AutoModel

            model = AutoModel.from_pretrained(source, dtype=torch.bfloat16, local_files_only=True)
            start = time.perf_counter()
            model.save_pretrained(os.path.join(tmp, "peer"), safe_serialization=True)
            seconds = time.perf_counter() - start
            result["peer_transformers_save_pretrained_bf16"] = {
                "seconds": round(seconds, 2),
                "dir_bytes": _dir_bytes(os.path.join(tmp, "peer")),
                "note": "weights only (no tokenizer, sentence-transformers files or card)",
            }
            result["export_time_ratio_bf16_vs_peer"] = round(bf16["export_seconds"] / seconds, 2)
        except ImportError as e:
            result["peer_transformers_save_pretrained_bf16"] = {"skipped": str(e)}
    text = jsonio.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return result


if __name__ == "__main__":
    main()

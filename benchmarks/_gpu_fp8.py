"""`gpu_suite.py`'s FP8 phase: compass-jax's FP8 export through real FP8 kernels against its
JAX W8A8 simulation, and FP8 vs bf16 GEMM time at the models' shapes.

A small random Qwen3 is exported twice by compass-jax's export path (`save_hf`: bf16, and FP8 =
compressed-tensors FP8_DYNAMIC). The real-kernel side is transformers' `Qwen3Model` holding the
exported tensors with every FP8 linear run as vLLM runs it on Hopper: the input quantised per
token on the fly (`max(absmax / 448, 1 / (448 * 512))`, vLLM's dynamic per-token scale) and
`torch._scaled_mm` with the per-token and per-channel weight scales, bf16 out. The simulation is
what `Encoder` runs for an FP8 directory (`simulate_w8a8`). Two controls say what the agreement
means: the bf16 export through transformers (how far FP8 moves the embeddings at all) and
compass-jax vs transformers in bf16 (the floor two bf16 implementations already differ by).
Without `torch._scaled_mm` for float8 (some CPU builds) the FP8 linears fall back to a
dequantised matmul, and the report says so. Not a benchmark itself; `gpu_suite.py` imports it.
"""

from __future__ import annotations

import pathlib
import tempfile
import time
from typing import Any

import _gpu_models as gm
import numpy as np
from _gpu_train import SIZES, qwen3

FP8_MAX = 448.0
MIN_TOKEN_SCALE = 1.0 / (FP8_MAX * 512.0)
# The model of the agreement check (hidden, layers, heads, kv heads, head dim, FFN, vocab).
SMALL = (1024, 4, 16, 8, 128, 3072, 32768)


def quantize_tokens(x):
    """`[t, i]` -> (float8_e4m3fn `[t, i]`, float32 scale `[t, 1]`), per token."""
    import torch

    x32 = x.float()
    scale = torch.clamp(x32.abs().amax(-1, keepdim=True) / FP8_MAX, min=MIN_TOKEN_SCALE)
    return (x32 / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn), scale


def quantize_rows(w):
    """Weight `[o, i]` -> (float8_e4m3fn `[o, i]`, float32 scale `[1, o]`), per output channel."""
    import torch

    scale = (w.float().abs().amax(1, keepdim=True) / FP8_MAX).clamp(min=1e-12)
    q = (w.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q, scale.reshape(1, -1).contiguous()


def scaled_mm(a, scale_a, w, scale_w):
    """`a [t, i]` (fp8) x `w [o, i]` (fp8) -> bf16 `[t, o]` on the FP8 tensor cores."""
    import torch

    return torch._scaled_mm(a, w.t(), scale_a=scale_a, scale_b=scale_w, out_dtype=torch.bfloat16)


def dequantised_mm(a, scale_a, w, scale_w):
    import torch

    return ((a.float() * scale_a) @ (w.float() * scale_w.reshape(-1, 1)).t()).to(torch.bfloat16)


def pick_kernel(device: str):
    """`(kernel, description)`: `torch._scaled_mm` if it runs here and agrees with the
    dequantised product, else the dequantised product."""
    import torch

    gen = torch.Generator(device=device).manual_seed(0)
    a, scale_a = quantize_tokens(torch.randn(32, 64, device=device, generator=gen))
    w, scale_w = quantize_rows(torch.randn(48, 64, device=device, generator=gen))
    try:
        got = scaled_mm(a, scale_a, w, scale_w).float()
        ref = dequantised_mm(a, scale_a, w, scale_w).float()
        if not torch.allclose(got, ref, rtol=2e-2, atol=2e-2):
            raise ValueError(f"disagrees with the dequantised product by {(got - ref).abs().max()}")
        return scaled_mm, "torch._scaled_mm (FP8 operands, per-token x per-channel scales)"
    except Exception as e:
        why = f"{type(e).__name__}: {str(e)[:200]}"
        return dequantised_mm, f"dequantised matmul (torch._scaled_mm unavailable: {why})"


def fp8_linear(weight, scale, kernel):
    """An `nn.Module` running one exported FP8 linear (`weight [o, i]`, `weight_scale [o, 1]`)."""
    import torch

    class Fp8Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            # Plain attributes, not buffers: the state dict keeps only the bf16 tensors.
            self.q, self.scale = weight, scale.float().reshape(1, -1).contiguous()

        def forward(self, x):
            a, scale_a = quantize_tokens(x.reshape(-1, x.shape[-1]))
            return kernel(a, scale_a, self.q, self.scale).reshape(*x.shape[:-1], -1)

    return Fp8Linear()


def torch_model(directory: pathlib.Path, device: str, kernel):
    """transformers' `Qwen3Model` (bf16) with the directory's tensors; FP8 linears run through
    `kernel`."""
    import safetensors.torch
    import torch
    from transformers import Qwen3Config, Qwen3Model

    from compass_jax import jsonio
    from compass_jax.interop.keymap import strip_prefix

    hf = jsonio.read_json(directory / "config.json")
    hf.pop("quantization_config", None)
    model = Qwen3Model(Qwen3Config.from_dict(hf)).to(device=device, dtype=torch.bfloat16).eval()
    tensors = {}
    for path in sorted(directory.glob("*.safetensors")):
        for key, value in safetensors.torch.load_file(str(path), device=device).items():
            tensors[strip_prefix("qwen3", key)] = value
    for key in [k for k, v in tensors.items() if v.dtype == torch.float8_e4m3fn]:
        module = key.removesuffix(".weight")
        parent, name = module.rsplit(".", 1)
        scale = tensors.pop(f"{module}.weight_scale")
        setattr(model.get_submodule(parent), name, fp8_linear(tensors.pop(key), scale, kernel))
    wanted = model.state_dict()
    missing = sorted(set(wanted) - set(tensors))
    if missing:
        raise ValueError(f"{directory}: no tensors for {missing[:5]}")
    model.load_state_dict({k: v for k, v in tensors.items() if k in wanted})
    return model


def torch_embed(model, ids: np.ndarray, mask: np.ndarray, device: str) -> np.ndarray:
    """Last-token pooled, L2-normalised embeddings (float32)."""
    import torch

    with torch.no_grad():
        ids_t = torch.as_tensor(ids, device=device)
        mask_t = torch.as_tensor(mask, device=device)
        hidden = model(input_ids=ids_t, attention_mask=mask_t).last_hidden_state.float()
        last = (mask_t * torch.arange(mask.shape[1], device=device)).amax(1)
        vectors = hidden[torch.arange(len(ids), device=device), last]
        return torch.nn.functional.normalize(vectors, dim=-1).cpu().numpy()


def jax_embed(directory: pathlib.Path, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """What `Encoder` computes for the directory (W8A8 simulated for an FP8 export)."""
    from compass_jax.encoder import Encoder, embed_program

    enc = Encoder.load(directory, dtype="bfloat16")
    run = embed_program(enc.cfg, enc.settings.pooling, enc.settings.normalize, enc.fp8)
    # one text per row: the mask is the row's only segment
    vectors = run(enc.params, ids, np.asarray(mask, np.int32), None, 1)
    return np.asarray(vectors, np.float32)[:, 0]


def cosines(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    c = np.sum(a * b, 1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return {"mean": float(c.mean()), "p1": float(np.percentile(c, 1)), "min": float(c.min())}


def device_seconds(fn, reps: int, device: str) -> float:
    """Seconds per call of `fn` over `reps` calls after 3 warm-ups: CUDA events on a GPU (the
    device's own clock), `perf_counter` after the last result otherwise."""
    import torch

    for _ in range(3):
        fn()
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / reps
    tic = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - tic) / reps


def gemm_row(tokens: int, i: int, o: int, reps: int, device: str, kernel, gen) -> dict:
    """bf16 `x @ w.T` against the FP8 kernel, alone and with the per-token quantisation of `x`
    (which vLLM runs as one extra kernel), at `[tokens, i] x [i, o]`."""
    import torch

    x = torch.randn(tokens, i, device=device, generator=gen).to(torch.bfloat16)
    w = (0.02 * torch.randn(o, i, device=device, generator=gen)).to(torch.bfloat16)
    (a, scale_a), (q, scale_w) = quantize_tokens(x), quantize_rows(w)
    bf16 = device_seconds(lambda: x @ w.t(), reps, device)
    fp8 = device_seconds(lambda: kernel(a, scale_a, q, scale_w), reps, device)
    fp8_q = device_seconds(lambda: kernel(*quantize_tokens(x), q, scale_w), reps, device)
    flop = 2.0 * tokens * i * o
    return {
        "m_n_k": [tokens, o, i],
        "bf16_tflop_per_s": round(flop / bf16 / 1e12, 3),
        "fp8_tflop_per_s": round(flop / fp8 / 1e12, 3),
        "fp8_speedup": round(bf16 / fp8, 3),
        "fp8_with_token_quant_speedup": round(bf16 / fp8_q, 3),
    }


def gemm_table(sizes, tokens: int, reps: int, device: str, kernel) -> list[dict[str, Any]]:
    """`gemm_row` at each linear's shape (q/k/v and gate/up fused, as vLLM runs them) of each
    model size."""
    import torch

    gen = torch.Generator(device=device).manual_seed(0)
    rows = []
    for size in sizes:
        d, _, n, k, h, f, _ = SIZES[size]
        linears = {"qkv": (d, (n + 2 * k) * h), "o": (n * h, d), "gate_up": (d, 2 * f)}
        for name, (i, o) in {**linears, "down": (f, d)}.items():
            row = gemm_row(tokens, i, o, reps, device, kernel, gen)
            rows.append({"size": size, "linear": name, **row})
    return rows


def fp8_phase(opts, clock, save, context: dict) -> dict[str, Any]:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    kernel, kernel_name = pick_kernel(device)
    d, layers, heads, kv, h, f, vocab = SIZES["smoke"] if opts.smoke else SMALL
    cfg = qwen3("smoke").replace(
        hidden_size=d, num_layers=layers, num_heads=heads, num_kv_heads=kv, head_dim=h,
        intermediate_size=f, vocab_size=vocab, pad_token_id=0,
    )  # fmt: skip
    rows, length = (8, 16) if opts.smoke else (256, 256)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "fp8_kernel": kernel_name,
        "model": {"hidden_size": d, "num_layers": layers, "head_dim": h, "vocab_size": vocab},
        "inputs": {"rows": rows, "length": length, "padding": "none"},
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        tokenizer = gm.write_tokenizer(root / "tokenizer", words=vocab - 2, max_length=512)
        params = gm.random_params(cfg)
        dirs = {
            k: gm.export(cfg, params, root / k, tokenizer, fp8=k == "fp8") for k in ("bf16", "fp8")
        }
        rng = np.random.default_rng(0)
        ids = rng.integers(2, vocab, (rows, length)).astype(np.int32)
        mask = np.ones_like(ids)
        ours = {k: jax_embed(path, ids, mask) for k, path in dirs.items()}
        real = {
            k: torch_embed(torch_model(p, device, kernel), ids, mask, device)
            for k, p in dirs.items()
        }
    report["cosine"] = {
        "simulation_vs_real_fp8": cosines(ours["fp8"], real["fp8"]),
        "bf16_vs_real_fp8": cosines(real["bf16"], real["fp8"]),
        "compass_jax_vs_transformers_bf16": cosines(ours["bf16"], real["bf16"]),
    }
    sim, moved = (
        report["cosine"][k]["mean"] for k in ("simulation_vs_real_fp8", "bf16_vs_real_fp8")
    )
    report["meets_target"] = sim >= 0.999
    report["simulation_closer_than_bf16"] = (1 - sim) < (1 - moved)
    save(report)
    sizes = ["smoke"] if opts.smoke else ["0.6b", "4b"]
    tokens, reps = (64, 3) if opts.smoke else (8192, 20)
    report["gemm"] = {
        "tokens": tokens,
        "reps": reps,
        "rows": gemm_table(sizes, tokens, reps, device, kernel),
    }
    return report

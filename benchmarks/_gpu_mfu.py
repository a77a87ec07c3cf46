"""`gpu_suite.py`'s MFU phases: the GradCache step of a Qwen3-sized encoder (seq 512) as
variants, levers on and off (`_gpu_train.plan`), each compiled ahead, checked against the card's
memory by XLA's buffer assignment before it runs, and timed (`_gpu_train.measure`); the first
variant also with every clock and a profiled step. Not a benchmark itself; `gpu_suite.py`
imports it.
"""

from __future__ import annotations

from typing import Any

import _gpu_train as gt

# The MFU phase per size (seq 512): batch, the largest chunk whose activations leave room on an
# H200 without cuDNN attention (`chunk_x2` doubles it), timed steps, and whether the tuned bundle
# runs before the default (4B: its figure is the target, and its budget may hold only one).
MFU_SHAPES = {
    "4b": dict(seq=512, batch=32, chunk=8, steps=2, tuned_first=True),
    "0.6b": dict(seq=512, batch=64, chunk=16, steps=3, tuned_first=False),
    "smoke": dict(seq=32, batch=8, chunk=4, steps=2, tuned_first=False),
}


def summarise(report: dict[str, Any]) -> None:
    """Each timed variant's speedup over the default, and the fastest as `best` (kept current
    after every variant, so a phase killed at its deadline still names one)."""
    ran = {k: v for k, v in report["variants"].items() if "step_s" in v}
    if not ran:
        return
    best = min(ran, key=lambda k: ran[k]["step_s"])
    base = ran.get("default", {}).get("step_s")
    for v in ran.values():
        v["speedup_vs_default"] = round(base / v["step_s"], 4) if base else None
    keys = ("step_s", "mfu", "hfu", "model_tflop_per_s", "speedup_vs_default", "levers")
    report["best"] = {"variant": best, **{k: ran[best].get(k) for k in keys}}
    report["best"]["hardware_flops_per_s"] = (
        report["flops_per_step"]["hardware_flops"] / ran[best]["step_s"]
    )


def mfu_phase(size: str, opts, clock: gt.Clock, save, context: dict) -> dict[str, Any]:
    """Every variant of `_gpu_train.plan(opts.tuned, opts.extras)` the budget allows, each compiled
    ahead (XLA's buffer assignment checked against the card before running) and timed; the
    first one also with every clock and a profiled step."""
    import jax

    size = "smoke" if opts.smoke else size
    shape = MFU_SHAPES[size]
    seq, batch, steps = shape["seq"], shape["batch"], shape["steps"]
    model = gt.Model.build(size, chunk=shape["chunk"], loss_block=(128, 1024))
    flops = model.flops(batch, seq)
    report: dict[str, Any] = {"model": model.describe(), **shape, "flops_per_step": flops}
    report["variants"] = variants = {}
    make, abstract = gt.batch_fn(model.harness.training.mesh, batch, seq, model.cfg.vocab_size)
    batches = [make(jax.random.key(i)) for i in range(2)]
    gpu = jax.default_backend() == "gpu"
    limit = model.memory_limit()
    compile_s = step_s = None
    tuned, extras = gt.available(opts.tuned, gpu), gt.available(opts.extras, gpu)
    report["not_available"] = sorted(set(opts.tuned + opts.extras) - set(tuned + extras))
    for levers in gt.plan(tuned, extras, tuned_first=shape["tuned_first"], smoke=opts.smoke):
        entry = variants[gt.name_of(levers)] = {"levers": list(levers)}
        need = (compile_s or 0) + (1 + steps) * (step_s or 0)
        if compile_s is not None and need > clock.left():
            entry["skipped"] = f"time budget: ~{need:.0f} s needed, {clock.left():.0f} s left"
            continue
        h = gt.with_levers(model.harness, levers)
        entry["chunk"] = h.spec.gradcache_chunk
        gt.log(f"{size} {gt.name_of(levers)}: compiling ({clock.left():.0f} s left)")
        try:
            entry.update(h.compile(abstract))
            compile_s = entry["compile_s"]
            gt.log(f"  compiled in {compile_s:.0f} s, XLA buffers {entry.get('xla_total_bytes')} B")
            total = entry.get("xla_total_bytes")
            if limit and total and total > limit:
                entry["skipped"] = f"does not fit: XLA's buffer assignment {total} B > {limit} B"
                continue
            diagnose = "clocks" not in report
            keep = getattr(opts, "keep_trace", None)
            got = gt.measure(h, batches, steps=steps, diagnose=diagnose, context=context,
                          trace_dir=keep)  # fmt: skip
        except Exception as e:
            entry.update(error=gt.error_text(e), oom=gt.is_oom(e))
            if any(x.is_deleted() for x in jax.tree.leaves(model.harness.state)):
                report["aborted"] = "the failed step took the donated training state with it"
                break
            continue
        finally:
            save(report)
        if diagnose:
            report["clocks"], report["profile"] = got.pop("clocks"), got.pop("profile")
        step_s = got["step_s"]
        entry.update(got, **gt.utilisation(flops, step_s, context))
        entry["device_peak_bytes_so_far"] = model.memory_stat("peak_bytes_in_use")
        summarise(report)
        gt.log(f"{size} {gt.name_of(levers)}: {step_s:.3f} s a step, MFU {entry.get('mfu')}")
        save(report)
    return report

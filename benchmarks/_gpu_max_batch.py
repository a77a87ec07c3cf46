"""`gpu_suite.py`'s largest-batch phase: how large a global batch one card trains with
GradCache (target: 65,536 triples at seq 128, the sentence-transformers CachedMNRL figure).

Compiling is far cheaper than running (one step at 65,536 x 3 x 128 tokens of a 0.6B model is
~90 PFLOP, minutes on one H200), so sizes are judged by XLA's buffer assignment of the compiled
step against the card's `bytes_limit`: the target and one smaller size, and a line through the
two (GradCache memory grows linearly with the batch) gives the largest batch that fits. One real
step then runs at the largest size whose projected time fits the budget. Not a benchmark itself;
`gpu_suite.py` imports it.
"""

from __future__ import annotations

from typing import Any

import _gpu_timing as timing
import _gpu_train as gt


def max_batch_phase(opts, clock: gt.Clock, save, context: dict) -> dict[str, Any]:
    """The target batch (65,536 at seq 128) and a smaller one compiled ahead: XLA's buffer
    assignment against the card's limit (a line through the two gives the largest batch that
    fits; GradCache memory grows linearly with the batch), then one real step at the largest
    size whose projected time fits what is left of the budget."""
    import jax

    gpu = jax.default_backend() == "gpu"
    seq, chunk, target = (32, 4, 16) if opts.smoke else (128, 128, 65536)
    # The 0.6B phase's best levers as they are (chunk_x2 doubles this phase's own chunk).
    levers = gt.available(context.get("best_levers", ()), gpu)
    model = gt.Model.build("smoke" if opts.smoke else "0.6b", chunk=chunk,
                        loss_block=(128, 1024) if opts.smoke else (1024, 8192))  # fmt: skip
    h = gt.with_levers(model.harness, levers)
    chunk, limit = h.spec.gradcache_chunk, model.memory_limit()
    result: dict[str, Any] = {"model": model.describe(), "seq": seq, "chunk": chunk,
                              "levers": levers, "target": target, "analysis": {}}  # fmt: skip
    makers = {}

    def analyse(batch: int) -> None:
        gt.log(f"max_batch: compiling batch {batch} ({clock.left():.0f} s left)")
        entry = result["analysis"][str(batch)] = {}
        make, abstract = gt.batch_fn(model.harness.training.mesh, batch, seq, model.cfg.vocab_size)
        entry.update(h.compile(abstract))
        entry["fits"] = bool(not limit or entry.get("xla_total_bytes", 0) <= limit)
        makers[batch] = make
        save(result)

    analyse(target)
    compile_s = result["analysis"][str(target)]["compile_s"]
    # The real step: the largest size whose projected time (from the MFU phase's throughput)
    # fits what is left; without a throughput, the smallest.
    rate = context.get("hardware_flops_per_s")
    sizes = [target >> i for i in range(8) if (target >> i) % chunk == 0]
    fits_time = lambda b: (
        (b != target) * compile_s + 1.3 * model.flops(b, seq)["hardware_flops"] / rate
        < clock.left() - 10
    )
    run = next((b for b in sizes if fits_time(b)), sizes[-1]) if rate else sizes[-1]
    second = run if run != target else target // 2  # a second point for the line
    if second not in makers and compile_s < clock.left() - 10:
        analyse(second)
    result["run"] = entry = {"batch": run}
    if run in makers and result["analysis"][str(run)]["fits"]:
        gt.log(f"max_batch: one step at batch {run}")
        try:
            batch = makers[run](jax.random.key(run))
            outputs, t = timing.timed(lambda: h.dispatch(batch), "polled")
            entry.update(step_s=round(t["total_s"], 3), loss=float(outputs["loss"]))
            entry["examples_per_s"] = round(run / t["total_s"], 1)
            entry.update(gt.utilisation(model.flops(run, seq), t["total_s"], context))
            entry["estimated_step_s_at_target"] = round(t["total_s"] * target / run, 1)
            entry["device_peak_bytes"] = model.memory_stat("peak_bytes_in_use")
        except Exception as e:
            entry.update(error=gt.error_text(e), oom=gt.is_oom(e))
    else:
        entry["skipped"] = "not compiled in the time budget, or does not fit"
    points = sorted((int(b), a["xla_total_bytes"]) for b, a in result["analysis"].items()
                    if a.get("xla_total_bytes"))  # fmt: skip
    if limit and len(points) >= 2 and points[-1][1] > points[0][1]:
        (b0, m0), (b1, m1) = points[0], points[-1]
        per_example = (m1 - m0) / (b1 - b0)
        largest = int((limit - m0) / per_example + b0) // chunk * chunk
        result["bytes_per_example"] = round(per_example, 1)
        result["largest_fitting_by_extrapolation"] = largest
    result["target_fits"] = result["analysis"][str(target)]["fits"]
    result["meets_target"] = bool(result["target_fits"] and "step_s" in entry)
    return result

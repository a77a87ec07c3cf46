"""Orchestration that composes the library into the jobs the commands run: an export with its
FP8 quality gate (`export`), the streaming merge of checkpoints on disk (`merge`, with its
writer in `merge_writer`), the merge sweep (`merge_sweep`), embedding a file (`embed`),
evaluating a model on a suite (`evaluate`) and the end-to-end demo (`demo/`).

Each module is importable on its own (nothing is re-exported here, so importing one job never
loads the others' dependencies). The commands in `compass_jax.commands` parse arguments and
call one function of this package.
"""

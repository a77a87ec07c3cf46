"""Data construction pipelines: catalog -> task records -> filtered, mined TFDS datasets.

`compass_jax.data` reads what these stages write. The stages are pure units of work
(`pipelines.units`, `pipelines.mining`) that two runners execute with the same result: in
process, resumable unit by unit (`pipelines.build`), or as an Apache Beam pipeline
(`pipelines.beam`) on any Beam runner.
"""

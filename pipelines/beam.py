"""The build as an Apache Beam pipeline: the units of `pipelines.units` as transforms.

    catalog files -> Ingest -> GroupByKey(partition) -> Construct | Synthesize | Translate
      -> GroupByKey(partition) -> Filter -> Deduplicate (whole build) -> Embed (per partition)
      -> GroupByKey(task, split) -> Mine -> GroupByKey(task, split, partition) -> Write shards
      -> Finalize (labels, TFDS metadata, index, card, report)

Every unit sorts its inputs by a stable key, so the output does not depend on bundle order or
on how the runner splits the work, and equals the in-process runner's byte for byte. Every file
is written atomically with deterministic contents: a retried bundle rewrites the same bytes,
and a rerun after a crash writes the same files (LLM answers come back from the prompt cache,
so nothing is paid twice). Beam's standard options choose the runner: the local DirectRunner by
default, `--runner=FlinkRunner`, `SparkRunner` or `DataflowRunner` for a cluster, whose
workers must see the build directory (a shared filesystem or mount).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, TypeOptions
from apache_beam.pvalue import AsDict, AsSingleton, TaggedOutput

from pipelines import card, finalize, mining, tfds_io, units
from pipelines.beam_dedup import Deduplicate
from pipelines.catalog.generate import write_catalog_file
from pipelines.catalog.schema import validate_record
from pipelines.config import BuildConfig
from pipelines.generate import make_generator
from pipelines.hashing import partition_of
from pipelines.teacher import load_teacher, teacher_name, translation_teacher
from pipelines.workspace import Workspace


def _report(stage: str, report: dict):
    return TaggedOutput("report", (stage, report))


def _products(rows) -> list:
    return [validate_record(r, "ingested") for r in rows]


class _Unit(beam.DoFn):
    """A DoFn with the build's config and directory (both picklable, both all it needs)."""

    def __init__(self, cfg: BuildConfig, root: str):
        self.cfg, self.root = cfg, root

    @property
    def ws(self) -> Workspace:
        return Workspace(self.root, self.cfg)


class WriteCatalog(_Unit):
    def process(self, index: int):
        c, path = self.cfg.catalog, self.ws.catalog_files()[index]
        n = write_catalog_file(
            path, c.generate_size, self.cfg.seed, c.generate_files, index, c.langs
        )
        yield _report("catalog", {"listings": n})
        yield path


class Ingest(_Unit):
    def process(self, path: str):
        products, rejects, report = units.ingest(self.cfg, path)
        if rejects:
            unit = f"f{self.ws.catalog_files().index(path):05d}"
            self.ws.write_rejects("ingest", unit, rejects)
        yield _report("ingest", report)
        for p in products:
            yield TaggedOutput("categories", tuple(p.category_keys))
            yield units.partition_unit(p.group_id, self.cfg), p.to_json()


class Records(_Unit):
    """construct / synthesize / translate of one partition -> (partition, record)."""

    def __init__(self, cfg, root, stage: str):
        super().__init__(cfg, root)
        self.stage = stage

    def process(self, item, labels):
        unit, rows = item
        products, cfg = _products(rows), self.cfg
        if self.stage == "construct":
            records, report = units.construct_unit(cfg, labels, products)
        else:
            generator = make_generator(cfg.generator, self.ws.cache(self.stage, unit))
            if self.stage == "synthesize":
                records, rejects, report = units.synthesize_unit(cfg, labels, products, generator)
            else:
                teacher = None
                if cfg.translation.filter == "embedding":
                    teacher = translation_teacher(cfg.mining or mining.MiningConfig())
                records, rejects, report = units.translate_unit(
                    cfg, labels, products, generator, teacher
                )
            self.ws.write_rejects(self.stage, unit, rejects)
        yield _report(self.stage, report)
        for r in records:
            yield unit, r


class Filter(_Unit):
    def process(self, item):
        unit, records = item
        kept, keys, rejects, report = units.filter_unit(self.cfg, records)
        self.ws.write_rejects("filter", unit, rejects)
        yield _report("filter", report)
        yield TaggedOutput("keys", keys)
        yield unit, kept


class Embed(_Unit):
    def process(self, item, drops, kept):
        unit, records = item
        records, rejects = units.apply_drops(records, drops)
        self.ws.write_rejects("dedup", unit, rejects)
        m, teacher = self.cfg.mining, None
        if m is not None:
            teacher = load_teacher(m, teacher_name(m, kept))
        pieces, report = mining.embed_unit(m, records, teacher)
        yield _report("embed", report)
        yield from pieces.items()


class Mine(_Unit):
    def process(self, item):
        (task, split), pieces = item
        records, report = mining.mine_unit(self.cfg.mining, task, split, pieces)
        yield _report("mine", report)
        for r in records:
            yield (task, split, partition_of(r["group_id"], self.cfg.partitions)), r


class Write(_Unit):
    def process(self, item):
        (task, split, index), rows = item
        records = [r for r in rows if r is not None]
        n = tfds_io.write_partition(self.ws.tfds_root, self.cfg, task, split, index, records)
        yield _report("write", {"records": n})
        yield (task, split, index), n


class Finalize(_Unit):
    def process(self, _, categories, lengths, counts, reports):
        by_task: dict = {}
        for (task, split, index), n in sorted(lengths):
            by_task.setdefault(task, {}).setdefault(split, [0] * self.cfg.partitions)[index] = n
        labels = units.label_map(categories)
        yield finalize.finalize(self.ws, labels, by_task, counts, reports)


class CardCounts(beam.CombineFn):
    def create_accumulator(self):
        return {}

    def add_input(self, counts, record):
        return card.count(counts, record)

    def merge_accumulators(self, accumulators):
        return _merged(accumulators)

    def extract_output(self, counts):
        return counts


def _merged(reports) -> dict:
    total: dict = {}
    for r in reports:
        units.merge_reports(total, r)
    return total


def _dedup_report(drops: list, n_in: int) -> tuple[str, dict]:
    return "dedup", units.dedup_report(n_in, dict(drops))


def build_pipeline(p: beam.Pipeline, cfg: BuildConfig, root: str) -> None:
    ws = Workspace(root, cfg)
    reports = []
    if cfg.catalog.paths:
        paths = p | "CatalogFiles" >> beam.Create(ws.catalog_files())
    else:
        written = (
            p
            | "CatalogIndices" >> beam.Create(range(cfg.catalog.generate_files))
            | "WriteCatalog"
            >> beam.ParDo(WriteCatalog(cfg, root)).with_outputs("report", main="paths")
        )
        paths, reports = written.paths, [written.report]
    ingested = paths | "Ingest" >> beam.ParDo(Ingest(cfg, root)).with_outputs(
        "report", "categories", main="products"
    )
    reports.append(ingested.report)
    categories = (
        ingested.categories | "DistinctCategories" >> beam.Distinct() | beam.combiners.ToList()
    )
    labels = categories | "LabelMap" >> beam.Map(units.label_map)
    partitions = ingested.products | "ByPartition" >> beam.GroupByKey()
    records = []
    for stage in units.record_stages(cfg):
        out = partitions | stage.title() >> beam.ParDo(
            Records(cfg, root, stage), AsSingleton(labels)
        ).with_outputs("report", main="records")
        records.append(out.records)
        reports.append(out.report)
    filtered = (
        records
        | "AllRecords" >> beam.Flatten()
        | "RecordsByPartition" >> beam.GroupByKey()
        | "Filter" >> beam.ParDo(Filter(cfg, root)).with_outputs("report", "keys", main="kept")
    )
    reports.append(filtered.report)
    keys = filtered.keys | "Keys" >> beam.FlatMap(lambda ks: ks)
    f = cfg.filters
    drops = keys | Deduplicate(near=f.near_dedup, bands=f.bands, threshold=f.near_dedup_threshold)
    n_in = keys | "CountRecords" >> beam.combiners.Count.Globally()
    drop_list = drops | "DropList" >> beam.combiners.ToList()
    dedup = drop_list | "DedupReport" >> beam.Map(_dedup_report, AsSingleton(n_in))
    reports.append(dedup)
    kept = dedup | "Kept" >> beam.Map(lambda report: report[1]["kept"])
    embedded = filtered.kept | "Embed" >> beam.ParDo(
        Embed(cfg, root), AsDict(drops), AsSingleton(kept)
    ).with_outputs("report", main="pieces")
    mined = (
        embedded.pieces
        | "ByShard" >> beam.GroupByKey()
        | "Mine" >> beam.ParDo(Mine(cfg, root)).with_outputs("report", main="records")
    )
    reports += [embedded.report, mined.report]
    every_shard = [
        ((task, split, i), None)
        for task, split in units.shard_keys(cfg)
        for i in range(cfg.partitions)
    ]
    written = (
        (mined.records, p | "AllShards" >> beam.Create(every_shard))
        | "RecordsAndShards" >> beam.Flatten()
        | "ByPartitionShard" >> beam.GroupByKey()
        | "Write" >> beam.ParDo(Write(cfg, root)).with_outputs("report", main="lengths")
    )
    reports.append(written.report)
    counts = (
        mined.records
        | "CardCounts" >> beam.Map(lambda kv: kv[1])
        | beam.CombineGlobally(CardCounts())
    )
    stage_reports = (
        reports
        | "AllReports" >> beam.Flatten()
        | "ReportsByStage" >> beam.CombinePerKey(_merged)
        | "ReportsDict" >> beam.combiners.ToDict()
    )
    _ = (
        p
        | "Once" >> beam.Create([None])
        | "Finalize"
        >> beam.ParDo(
            Finalize(cfg, root),
            AsSingleton(categories),
            AsSingleton(written.lengths | "Lengths" >> beam.combiners.ToList()),
            AsSingleton(counts),
            AsSingleton(stage_reports),
        )
    )


def run(cfg: BuildConfig, out: str, beam_options: Sequence[str] = ()) -> dict:
    """Run the build on the Beam runner that `beam_options` name (default: DirectRunner)."""
    ws = Workspace(out, cfg)
    ws.claim()
    tic = time.perf_counter()
    options = PipelineOptions(list(beam_options))
    # The DoFns yield records and tagged reports from one generator: Beam's inferred output
    # hints would be a Union that GroupByKey rejects, so the graph is checked by the tests.
    options.view_as(TypeOptions).pipeline_type_check = False
    with beam.Pipeline(options=options) as p:
        build_pipeline(p, cfg, ws.root)
    return {"runner": options.get_all_options().get("runner") or "DirectRunner",
            "seconds": round(time.perf_counter() - tic, 1)}  # fmt: skip

"""The whole build on a small bundled catalog: TFDS output readable without TensorFlow,
splits held out by group_id, mined negatives with their classes, the Beam pipeline
byte-identical to the in-process build, a killed build (either runner) rerun to the same bytes,
and the trainer-facing readers over the output."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from compass_jax.data.mixture import MixtureReader, PairReader, open_reader
from compass_jax.data.pairs import read_records
from compass_jax.data.text_hash import text_hash
from compass_jax.data.tfds_source import open_build
from pipelines import build
from pipelines.config import ConfigError, load_config
from pipelines.export import export_jsonl

ROOT = pathlib.Path(__file__).resolve().parents[1]

SMALL = [
    "catalog.generate_size=150",
    "catalog.generate_files=2",
    "partitions=3",
    "synthesis.fraction=0.3",
    "translation.fraction=0.3",
    "mining.teacher=hashing",  # the model teacher is tested apart (tests/test_pipelines_mining)
]
COMPARED = ("tfds", "datasets.json", "labels.json", "card.json", "card.md")


def outputs(root: pathlib.Path) -> dict[str, bytes]:
    files = {}
    for name in COMPARED:
        path = root / name
        for f in sorted(path.rglob("*") if path.is_dir() else [path]):
            if f.is_file():
                files[str(f.relative_to(root))] = f.read_bytes()
    return files


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("build") / "out"
    ran = build.run(load_config(None, SMALL), str(out), progress=False)
    assert ran["finalize"] == 1
    return out


def test_output_is_tfds_with_held_out_groups(built):
    index = json.loads((built / "datasets.json").read_text())["tasks"]
    assert set(index) == {
        "query_product",
        "synthetic_query",
        "title_category",
        "cross_lingual",
        "title_description",
        "clustering",
    }
    owner, uids = {}, set()
    for split in ("train", "validation", "test"):
        for task, source in open_build(built, split, list(index)).items():
            raw = source._source
            assert len(source) == index[task]["records"][split]
            for i in range(len(source)):
                r = raw[i]
                group, uid = r["group_id"].decode(), r["uid"].decode()
                assert owner.setdefault(group, split) == split, f"{group} in two splits"
                assert uid not in uids, f"duplicate record {uid}"
                uids.add(uid)
                assert int(r["query_hash"]) == text_hash(r["query"].decode())
                assert r["task"].decode() == task
            if index[task]["labelled"] and len(source):
                assert all(source[i].label >= 0 for i in range(len(source)))
    assert len({s for s in owner.values()}) == 3 and len(uids) > 1000
    card = json.loads((built / "card.json").read_text())
    assert card["tasks"]["title_category"]["records"] == sum(
        index["title_category"]["records"].values()
    )
    assert set(card["tasks"]["query_product"]["langs"]) == {
        "en",
        "id",
        "ms",
        "th",
        "vi",
        "tl",
        "pt",
    }
    rejects = list((built / "rejects").rglob("*.jsonl"))
    assert rejects and all("reason" in json.loads(line) for f in rejects for line in f.open())
    trains = [open_build(built, "train")[t] for t in ("query_product", "title_description")]
    assert sum(bool(r.negatives) for s in trains for r in s) > 0.8 * sum(map(len, trains))


def test_negatives_carry_the_class_of_their_product(built, tmp_path):
    """Each negative's label is its product's leaf class, found here from the catalog files and
    labels.json (not from the build's own records)."""
    leaves = json.loads((built / "labels.json").read_text())["levels"][-1]
    leaf_of = {}
    for f in (built / "catalog").glob("*.jsonl"):
        for line in f.open(encoding="utf-8"):
            p = json.loads(line)
            keys = p.get("category_ids") or p["category_path"]
            leaf_of.setdefault(p["title"], set()).add(leaves.index("/".join(keys)))
    checked = 0
    for split in ("train", "test"):
        raw = open_build(built, split, ["query_product"])["query_product"]._source
        for i in range(len(raw)):
            r = raw[i]
            negatives = [n.decode() for n in r["negatives"]]
            assert len(r["negative_labels"]) == len(negatives)
            for text, label in zip(negatives, map(int, r["negative_labels"]), strict=True):
                assert label in leaf_of[text], (text, label)
                checked += 1
    assert checked > 500
    exported = tmp_path / "qp.jsonl"  # the JSONL export carries the same labels
    export_jsonl(built, exported, split="train", tasks=["query_product"])
    raw = open_build(built, "train", ["query_product"])["query_product"]._source
    assert [json.loads(line)["negative_labels"] for line in exported.open()] == [
        list(map(int, raw[i]["negative_labels"])) for i in range(len(raw))
    ]


def test_beam_pipeline_is_byte_identical_to_the_local_build(built, tmp_path):
    out = tmp_path / "beam"
    summary = build.run(load_config(None, SMALL), str(out), runner="beam")
    assert summary["runner"] == "DirectRunner"
    assert outputs(out) == outputs(built)
    report = json.loads((out / "report.json").read_text())
    assert (
        report["dedup"]["dropped"]
        == json.loads((built / "report.json").read_text())["dedup"]["dropped"]
    )
    with pytest.raises(ValueError, match="NoSuchRunner"):  # options reach Beam as given
        build.run(load_config(None, SMALL), str(out), runner="beam",
                  beam_options=["--runner=NoSuchRunner"])  # fmt: skip


def _kill_when(cmd, out, ready, what):
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not ready():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, f"{what} never started"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "datasets.json").exists()


def cli(out, *extra):
    return [sys.executable, "-m", "compass_jax.cli", "data", "build", "--out", str(out),
            "--quiet", *extra, *[a for s in SMALL for a in ("--set", s)]]  # fmt: skip


def test_killed_beam_build_reruns_to_the_same_files_paying_nothing_twice(built, tmp_path):
    out = tmp_path / "beam-killed"
    # Killed once the filter runs: synthesis and translation answers are in the cache by then.
    _kill_when(
        cli(out, "--runner", "beam"), out, lambda: (out / "rejects" / "filter").exists(), "filter"
    )
    build.run(load_config(None, SMALL), str(out), runner="beam")
    assert outputs(out) == outputs(built)
    assert not [p for p in out.rglob(".tmp-*") if p.is_file()]
    report = json.loads((out / "report.json").read_text())
    for stage in ("synthesize", "translate"):
        g = report[stage]["generator"]
        assert g["cache_hits"] == g["requests"] > 0 and g.get("calls", 0) == 0


def test_killed_build_resumes_to_the_same_result(built, tmp_path):
    out = tmp_path / "killed"
    done = lambda: list((out / "work" / "filter").glob("*.done.json"))
    _kill_when(cli(out), out, done, "filter")  # part-way through the filter stage
    ran = build.run(load_config(None, SMALL), str(out), progress=False)
    assert ran["catalog"] == 0 and ran["construct"] == 0 and ran["filter"] < 3  # resumed
    assert outputs(out) == outputs(built)
    again = build.run(load_config(None, SMALL), str(out), progress=False)  # idempotent
    assert sum(again.values()) == 0
    with pytest.raises(ValueError, match="another config"):
        build.run(load_config(None, [*SMALL, "seed=1"]), str(out), progress=False)


def test_readers_over_the_build_match_pair_reader_on_exported_jsonl(built, tmp_path):
    jsonl = tmp_path / "train.jsonl"
    counts = export_jsonl(built, jsonl, split="train")
    records = read_records(jsonl)
    assert len(records) == sum(counts.values())
    assert {"query", "positive", "negatives", "negative_labels", "label", "task", "lang"} == set(
        json.loads(jsonl.read_text().splitlines()[0])
    )
    kwargs = dict(
        batch_size=16,
        seed=4,
        task_weights={"query_product": 2.0, "cross_lingual": 1.0, "title_category": 1.0},
        process_index=0,
        process_count=2,
    )
    tfds_reader = open_reader(built, **kwargs)
    assert isinstance(tfds_reader, MixtureReader)
    jsonl_reader = PairReader(records, **kwargs)
    assert tfds_reader.tasks == jsonl_reader.tasks
    for _ in range(30):
        assert tfds_reader.next_batch() == jsonl_reader.next_batch()
    state = json.loads(json.dumps(tfds_reader.state()))
    expected = [tfds_reader.next_batch() for _ in range(5)]
    resumed = open_reader(built, **kwargs)
    resumed.restore(state)
    assert [resumed.next_batch() for _ in range(5)] == expected


def test_user_catalog_with_invalid_lines_rejected(tmp_path):
    good = {
        "lang": "en",
        "title": "Red running shoes size 42",
        "attributes": {"Colour": "Red"},
        "description": "Lightweight running shoes with a breathable mesh upper.",
        "category_path": ["Shoes", "Running"],
    }
    lines = [
        json.dumps(
            {**good, "id": f"p{i}", "group_id": f"g{i // 2}", "title": f"{good['title']} model {i}"}
        )
        for i in range(12)
    ]
    lines.insert(3, '{"id": "bad", "lang": "en"}')
    (tmp_path / "shop.jsonl").write_text("\n".join(lines) + "\n")
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(
        json.dumps(
            {
                "partitions": 2,
                "catalog": {"paths": ["shop.jsonl"], "on_invalid": "reject"},
                "synthesis": None,
                "translation": None,
                "mining": None,
            }
        )
    )
    out = tmp_path / "out"
    build.run(load_config(cfg_path), str(out), progress=False)
    [reject] = [
        json.loads(x) for f in (out / "rejects" / "ingest").glob("*.jsonl") for x in f.open()
    ]
    assert reject["error"].startswith(f"{tmp_path / 'shop.jsonl'}:4: field 'title'")
    index = json.loads((out / "datasets.json").read_text())["tasks"]
    assert sum(index["query_product"]["records"].values()) > 0
    beam_out = tmp_path / "beam"  # user files, rejected lines, no mining: the same on Beam
    build.run(load_config(cfg_path), str(beam_out), runner="beam")
    assert outputs(beam_out) == outputs(out)
    assert (beam_out / "rejects" / "ingest" / "f00000.jsonl").read_text() == (
        out / "rejects" / "ingest" / "f00000.jsonl"
    ).read_text()
    with pytest.raises(ConfigError, match="MiningConfig has no field 'teachr'"):
        load_config(cfg_path, ["mining.teachr=hashing"])


def test_suite_from_the_held_out_split(built, tmp_path):
    """`compass-jax data suite`: every task's texts come from the held-out split (none from
    training, except the classifier's fitting titles), and the suite evaluates end to end."""
    from test_export import tiny_model_dir

    from compass_jax.encoder import Encoder
    from compass_jax.eval import evaluate, load_suite
    from pipelines.suite import write_suite

    path = write_suite(built, tmp_path / "suite", split="test")
    suite = load_suite(path)
    held_out = {t for s in open_build(built, "test").values() for r in s
                for t in (r.query, r.positive, *r.negatives)}  # fmt: skip
    trained = {t for s in open_build(built, "train").values() for r in s
               for t in (r.query, r.positive, *r.negatives)}  # fmt: skip
    families = {t.name.split("-")[0] for t in suite.tasks}
    assert families == {"search", "category", "clustering", "xling"}, families
    for task in suite.tasks:
        texts = {
            "retrieval": lambda r: [r["query"], *r["relevant"]],
            "classification": lambda r: [r["text"]] if r["split"] == "test" else [],
            "clustering": lambda r: [r["text"]],
            "bitext": lambda r: [r["source"], r["target"]],
        }[task.type]
        used = {t for r in task.records for t in texts(r)} | set(task.corpus)
        assert used <= held_out, (task.name, used - held_out)
        if task.type == "retrieval":
            assert all(set(r["relevant"]) <= set(task.corpus) for r in task.records)
        if task.type == "classification":
            fit = {r["text"] for r in task.records if r["split"] == "train"}
            assert fit <= trained and not fit & used
    model = tiny_model_dir("bert", tmp_path / "model")
    results = evaluate(Encoder.load(model), suite, progress=False)
    assert set(results["tasks"]) == {t.name for t in suite.tasks}
    assert all(0 <= t["main"] <= 1 for t in results["tasks"].values())

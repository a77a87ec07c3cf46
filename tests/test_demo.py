"""`compass-jax demo` end to end at `--size tiny` on a random tiny BERT: every stage runs, the
report's figures are the evaluation runner's own, each arm trains once per seed (distinct batch
orders, the same evaluation items), the ablation differs from the CAM run in the masks only, the
merged model is the SLERP of base and CAM seed 0 at the chosen t, the README block is the
report's, the CAM-density experiment writes its table and plot, and a second run resumes
instead of redoing the work."""

import json

import jax
import numpy as np
import pytest
from test_export import tiny_model_dir

from compass_jax import cli, merge, tree
from compass_jax.encoder import Encoder
from compass_jax.eval import evaluate, load_suite
from compass_jax.eval.compare import family
from compass_jax.eval.runner import MAIN_SCORE
from compass_jax.interop import load_hf
from compass_jax.resolve import resolve_model
from compass_jax.workflows.demo.readme import BEGIN, END
from compass_jax.workflows.demo.report import masked_shares

pytest.importorskip("tensorflow_datasets")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    model = tiny_model_dir("bert", root / "model", seed=3)
    out = root / "out"
    argv = ["demo", "--size", "tiny", "--model", str(model), "--out", str(out)]
    assert cli.main(argv) == 0
    return model, out, argv


def seed_runs(out, label):
    return sorted(out.glob(f"train-{label}-seed*"))


def test_report_covers_every_model_suite_and_language(demo):
    _, out, _ = demo
    report = json.loads((out / "report.json").read_text())
    labels = ["base", "CAM", "no-CAM", "merged", "FP8 export", "bf16 export"]
    assert list(report["scores"]) == labels
    suite = load_suite(str(out / "data" / "suite" / "suite.json"))
    general = load_suite(report["general_suite"]["path"])
    assert general.name == "general-l10n" and len({t.lang for t in general.tasks}) == 6
    langs = {t.lang for t in suite.tasks}
    assert len(langs) == 7
    # the trained arms: one result per seed, on the domain suite; seed 0 of CAM on both suites
    assert report["seeds"]["runs"] == 2 and report["seeds"]["training"] == [0, 1]
    for label in ("CAM", "no-CAM"):
        runs = report["scores"][label]
        assert len(runs) == 2
        assert list(runs[1]) == ["domain"]
        assert list(runs[0]) == (["domain", "general"] if label == "CAM" else ["domain"])
    single = [report["scores"][k] for k in ("base", "merged", "FP8 export", "bf16 export")]
    for scores in [*single, *report["scores"]["CAM"], *report["scores"]["no-CAM"]]:
        assert set(scores["domain"]["tasks"]) == {t.name for t in suite.tasks}
        if "general" in scores:
            assert set(scores["general"]["tasks"]) == {t.name for t in general.tasks}
    assert all("general" in scores for scores in single)
    claims = [c["claim"] for c in report["checks"]]
    assert claims[0].startswith("trained (CAM) beats")
    assert any("forgets" in c for c in claims) and any("recovers" in c for c in claims)
    assert all(c["verdict"] in ("yes", "no", "not shown") and c["numbers"]
               for c in report["checks"])  # fmt: skip
    # CAM vs no-CAM over both seeds: the two-level interval, and per-seed values in the table
    cam_vs = next(c for c in report["checks"] if c["claim"] == "CAM beats no-CAM on clustering")
    assert cam_vs["runs"] == 2 and "(2 runs)" in cam_vs["numbers"]
    assert [len(row["CAM"]["runs"]) for row in report["seed_table"]] == [2] * 4
    # FP8 minus bf16 export on every family and language of both suites, with intervals
    for suite, scores in report["scores"]["FP8 export"].items():
        diffs = report["fp8_vs_bf16"][suite]
        families = {family(name, t["lang"]) for name, t in scores["tasks"].items()}
        assert set(diffs) == families | {"average"}
        for cells in diffs.values():
            assert all(c["low"] <= c["estimate"] <= c["high"] for c in cells.values())
    assert set(report["fp8_vs_bf16"]["domain"]["category"]) == langs | {"mean"}
    text = (out / "report.md").read_text()
    for heading in ("## Checks", "### search (retrieval)", "### category (classification)",
                    "### clustering (clustering)", "### xling (bitext)",
                    "## CAM vs no-CAM over training seeds", "## General suite (forgetting check)",
                    "### l10n-xling (retrieval)", "## Merge sweep",
                    "## FP8 export vs bf16 export: score differences", "### general",
                    "## CAM masks during training"):  # fmt: skip
        assert heading in text
    assert all(f"| {lang} |" in text for lang in langs)
    for png in ("training.png", "sweep/sweep.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 0.99 < report["fp8_cosine"]["all"]["mean"] <= 1.0 + 1e-6
    # trained on the simulated 8-device mesh, every step logged
    assert "on 8 devices" in report["training"]
    assert [r["step"] for r in report["histories"]["CAM seed 1"]] == [1, 2]


def test_figures_are_the_runners_own(demo):
    model, out, _ = demo
    report = json.loads((out / "report.json").read_text())
    suite = load_suite(str(out / "data" / "suite" / "suite.json"))
    # With the run's embedding cache: packed batches make a text's embedding depend on what it
    # shares a row with at the 1e-7 level, which flips rankings of this random tiny model whose
    # embeddings all nearly coincide (tests/test_packing.py bounds the difference).
    fresh = evaluate(Encoder.load(model), suite, cache_dir=str(out / "cache"), progress=False)
    assert report["scores"]["base"]["domain"]["average"] == pytest.approx(fresh["average"])
    cam = np.mean([run["domain"]["average"] for run in report["scores"]["CAM"]])
    check = report["checks"][0]
    assert check["estimate"] == pytest.approx(cam - fresh["average"], abs=1e-9)
    assert check["low"] <= check["estimate"] <= check["high"] and check["resamples"] >= 1000
    shown = "yes" if check["low"] > 0 else "no" if check["high"] < 0 else "not shown"
    assert check["verdict"] == shown
    # the per-item values behind it are stored with the scores
    for name, task in report["scores"]["CAM"][1]["domain"]["tasks"].items():
        assert task["items"][MAIN_SCORE[task["type"]]], name


def test_ablation_differs_in_the_masks_only_and_seeds_in_order_and_dropout(demo):
    _, out, _ = demo
    config = lambda path: json.loads((path / "run.json").read_text())["config"]
    strip = lambda c: {k: v for k, v in c.items() if k != "losses"}
    for seed, (cam_dir, nocam_dir) in enumerate(zip(seed_runs(out, "cam"), seed_runs(out, "nocam"),
                                                    strict=True)):  # fmt: skip
        cam, nocam = config(cam_dir), config(nocam_dir)
        assert cam["losses"]["default"]["class_mask"] and cam["losses"]["default"]["duplicate_mask"]
        assert not nocam["losses"]["default"]["class_mask"]
        assert not nocam["losses"]["default"]["duplicate_mask"]
        assert strip(cam) == strip(nocam)
        assert cam["seed"] == cam["data"]["seed"] == seed and cam["dropout"]
    # the seeds differ in the batch order and the dropout key alone
    first, second = (config(p) for p in seed_runs(out, "cam"))
    drop = lambda c: {k: v for k, v in c.items() if k != "seed"} | {"data": {
        k: v for k, v in c["data"].items() if k != "seed"}}  # fmt: skip
    assert drop(first) == drop(second)


def test_seeds_read_distinct_batches_of_the_same_data(demo):
    from compass_jax.data.mixture import open_reader

    _, out, _ = demo
    report = json.loads((out / "report.json").read_text())
    orders = []
    for seed in report["seeds"]["training"]:
        reader = open_reader(out / "data" / "train.jsonl", batch_size=32, seed=seed)
        orders.append([(t, [r.query for r in rows]) for t, rows in
                       (reader.next_batch() for _ in range(4))])  # fmt: skip
    assert orders[0] != orders[1]
    # every run is scored on the same items, so runs pair item by item
    digests = {name: {run["domain"]["tasks"][name]["data_digest"]
                      for run in report["scores"]["CAM"] + report["scores"]["no-CAM"]}
               for name in report["scores"]["base"]["domain"]["tasks"]}  # fmt: skip
    assert all(len(d) == 1 for d in digests.values())


def test_merged_model_is_the_slerp_at_the_chosen_t(demo):
    model, out, _ = demo
    report = json.loads((out / "report.json").read_text())
    t = report["sweep"]["best_t"]
    _, base = load_hf(model)
    _, cam = load_hf(resolve_model(report["models"]["CAM"][0]))  # the workdir's export
    _, merged = load_hf(report["models"]["merged"])
    expected = jax.device_get(merge.slerp(base, cam, t))
    for path, value in tree.flatten(expected).items():
        np.testing.assert_allclose(tree.flatten(merged)[path], value, atol=1e-6, err_msg=path)
    # `--size tiny` trains the top layer only: the rest is the base, bit for bit
    cam, base = tree.flatten(cam), tree.flatten(base)
    changed = {p for p in base if not np.array_equal(cam[p], base[p])}
    assert changed and all(p.startswith("layers.2.") for p in changed), sorted(changed)


def test_second_run_resumes_adds_the_density_experiment_and_writes_the_readme(
    demo, capsys, tmp_path
):
    _, out, argv = demo
    first = json.loads((out / "report.json").read_text())
    # a trained model is its workdir, exported to a HF directory once (by the resolver)
    assert first["models"]["CAM"][0] == str(out / "train-cam-seed0")
    (export,) = (out / "train-cam-seed0" / "hf").iterdir()
    stamp = (export / "model.safetensors").stat().st_mtime_ns
    readme = tmp_path / "README.md"
    readme.write_text(f"# project\n\n{BEGIN}\nstale numbers\n{END}\n\nmore text\n")
    assert cli.main([*argv, "--experiment", "cam-density", "--readme", str(readme)]) == 0
    second = json.loads((out / "report.json").read_text())
    assert second["histories"] == first["histories"]  # training was not redone
    assert [p.name for p in (out / "train-cam-seed0" / "hf").iterdir()] == [export.name]
    assert (export / "model.safetensors").stat().st_mtime_ns == stamp
    for label in ("base", "CAM", "no-CAM"):
        assert second["scores"][label] == first["scores"][label]
    assert "results:" in capsys.readouterr().out

    # the experiment: every share with CAM - no-CAM and its interval over both seeds
    density = json.loads((out / "cam-density" / "density.json").read_text())
    assert [row["share"] for row in density["rows"]] == [0.0, 0.6]
    for row in density["rows"]:
        for fam in ("category", "clustering"):
            c = row[fam]["comparison"]
            assert c["low"] <= c["estimate"] <= c["high"] and c["runs"] == 2
    zero, dense = density["rows"]
    # share 0: no candidate of the anchor's class, nothing to mask, the arms train alike
    assert zero["masked_class"] == 0.0
    assert zero["category"]["comparison"]["estimate"] == 0.0
    assert zero["clustering"]["comparison"]["estimate"] == 0.0
    assert dense["masked_class"] > 0.3
    assert (out / "cam-density" / "density.png").read_bytes()[:4] == b"\x89PNG"
    text = (out / "report.md").read_text()
    assert "## CAM minus no-CAM by same-class share" in text

    # the README block is the report's, its figures beside the README
    written = readme.read_text()
    assert written.startswith("# project\n") and written.endswith(f"{END}\n\nmore text\n")
    assert "stale numbers" not in written and "#### Checks" in written
    assert "--size tiny --seeds 2" in written
    for name in ("training.png", "sweep.png", "density.png"):
        assert f"(docs/demo/{name})" in written
        assert (tmp_path / "docs" / "demo" / name).read_bytes()[:4] == b"\x89PNG"
    table = next(line for line in text.splitlines() if line.startswith("| trained (CAM)"))
    assert table in written


def test_bad_arguments_fail_before_any_stage_with_one_line(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# no demo block here\n")
    out = tmp_path / "out"
    for extra, message in (
        (["--readme", str(readme)], f"--readme {readme}: needs one line"),
        (["--readme", str(tmp_path / "missing.md")], "missing.md: No such file"),
        (["--seeds", "0"], "argument --seeds: must be >= 1, got 0"),
    ):
        assert cli.main(["demo", "--size", "tiny", "--out", str(out), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert not out.exists()  # nothing was started


def test_masked_shares_table_averages_each_arm_and_task():
    step = lambda task, c, d, m, a: {"task": task, "masked_class": c, "masked_duplicate": d,
                                     "masked_margin": m, "masked_any": a}  # fmt: skip
    histories = {"CAM": [step("cat", 0.1, 0.0, 0.0, 0.1), step("cat", 0.3, 0.1, 0.0, 0.3),
                         step("search", 0.0, 0.02, 0.0, 0.02)],
                 "no CAM": [{"task": "cat", "loss": 1.0}]}  # fmt: skip
    lines = masked_shares(histories)
    assert "| CAM | cat | 2 | 0.200 | 0.050 | 0.000 | 0.200 |" in lines
    assert "| CAM | search | 1 | 0.000 | 0.020 | 0.000 | 0.020 |" in lines
    assert not any(line.startswith("| no CAM") for line in lines)  # no mask metrics logged
    assert masked_shares({"no CAM": []}) == []

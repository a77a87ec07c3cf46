"""`compass-jax demo` end to end at `--size tiny` on a random tiny BERT: every stage runs, the
report's figures are the evaluation runner's own, the ablation differs from the CAM run in the
masks only, the merged model is the SLERP of base and CAM at the chosen t, and a second run
resumes instead of redoing the work."""

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


def test_report_covers_every_model_suite_and_language(demo):
    _, out, _ = demo
    report = json.loads((out / "report.json").read_text())
    labels = ["base", "CAM", "no-CAM", "merged", "FP8 export", "bf16 export"]
    assert list(report["scores"]) == labels
    suite = load_suite(str(out / "data" / "suite" / "suite.json"))
    langs = {t.lang for t in suite.tasks}
    assert len(langs) == 7
    for scores in report["scores"].values():
        assert set(scores["domain"]["tasks"]) == {t.name for t in suite.tasks}
        assert set(scores["general"]["tasks"]) == {t.name for t in load_suite("general").tasks}
    assert report["checks"][0]["claim"].startswith("trained (CAM) beats")
    assert all(c["verdict"] in ("yes", "no", "not shown") and c["numbers"]
               for c in report["checks"])  # fmt: skip
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
                    "## FP8 export vs bf16 export: score differences",
                    "## CAM masks during training"):  # fmt: skip
        assert heading in text
    assert all(f"| {lang} |" in text for lang in langs)
    for png in ("training.png", "sweep/sweep.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 0.99 < report["fp8_cosine"]["all"]["mean"] <= 1.0 + 1e-6
    # trained on the simulated 8-device mesh, every step logged
    assert "on 8 devices" in report["training"]
    assert [r["step"] for r in report["histories"]["CAM"]] == [1, 2]


def test_figures_are_the_runners_own(demo):
    model, out, _ = demo
    report = json.loads((out / "report.json").read_text())
    suite = load_suite(str(out / "data" / "suite" / "suite.json"))
    # With the run's embedding cache: packed batches make a text's embedding depend on what it
    # shares a row with at the 1e-7 level, which flips rankings of this random tiny model whose
    # embeddings all nearly coincide (tests/test_packing.py bounds the difference).
    fresh = evaluate(Encoder.load(model), suite, cache_dir=str(out / "cache"), progress=False)
    assert report["scores"]["base"]["domain"]["average"] == pytest.approx(fresh["average"])
    cam = report["scores"]["CAM"]["domain"]["average"]
    check = report["checks"][0]
    assert check["estimate"] == pytest.approx(cam - fresh["average"], abs=1e-9)
    assert check["low"] <= check["estimate"] <= check["high"] and check["resamples"] >= 1000
    shown = "yes" if check["low"] > 0 else "no" if check["high"] < 0 else "not shown"
    assert check["verdict"] == shown
    # the per-item values behind it are stored with the scores
    for name, task in report["scores"]["CAM"]["domain"]["tasks"].items():
        assert task["items"][MAIN_SCORE[task["type"]]], name


def test_ablation_differs_in_the_masks_only(demo):
    _, out, _ = demo
    runs = {k: json.loads((out / f"train-{k}" / "run.json").read_text()) for k in ("cam", "nocam")}
    configs = {k: r["config"] for k, r in runs.items()}
    cam, nocam = configs["cam"]["losses"]["default"], configs["nocam"]["losses"]["default"]
    assert cam["class_mask"] and cam["duplicate_mask"]
    assert not nocam["class_mask"] and not nocam["duplicate_mask"]
    strip = lambda c: {k: v for k, v in c.items() if k != "losses"}
    assert strip(configs["cam"]) == strip(configs["nocam"])


def test_merged_model_is_the_slerp_at_the_chosen_t(demo):
    model, out, _ = demo
    report = json.loads((out / "report.json").read_text())
    t = report["sweep"]["best_t"]
    _, base = load_hf(model)
    _, cam = load_hf(resolve_model(report["models"]["CAM"]))  # the workdir's export
    _, merged = load_hf(report["models"]["merged"])
    expected = jax.device_get(merge.slerp(base, cam, t))
    for path, value in tree.flatten(expected).items():
        np.testing.assert_allclose(tree.flatten(merged)[path], value, atol=1e-6, err_msg=path)
    # `--size tiny` trains the top layer only: the rest is the base, bit for bit
    cam, base = tree.flatten(cam), tree.flatten(base)
    changed = {p for p in base if not np.array_equal(cam[p], base[p])}
    assert changed and all(p.startswith("layers.2.") for p in changed), sorted(changed)


def test_second_run_resumes(demo, capsys):
    _, out, argv = demo
    first = json.loads((out / "report.json").read_text())
    # a trained model is its workdir, exported to a HF directory once (by the resolver)
    assert first["models"]["CAM"] == str(out / "train-cam")
    (export,) = (out / "train-cam" / "hf").iterdir()
    stamp = (export / "model.safetensors").stat().st_mtime_ns
    assert cli.main(argv) == 0
    second = json.loads((out / "report.json").read_text())
    assert second["histories"] == first["histories"]  # training was not redone
    assert [p.name for p in (out / "train-cam" / "hf").iterdir()] == [export.name]
    assert (export / "model.safetensors").stat().st_mtime_ns == stamp
    for label in ("base", "CAM", "no-CAM"):
        assert second["scores"][label] == first["scores"][label]
    assert "results:" in capsys.readouterr().out


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

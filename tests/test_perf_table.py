"""`benchmarks/perf_table.py`: the README's performance table comes from the committed reports in
`docs/benchmarks/`, a verdict follows its target on both sides of it, a missing report is said,
and the README block is replaced in place."""

import json
import pathlib
import sys

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"
REPORTS = BENCHMARKS.parent / "docs" / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import perf_table  # noqa: E402


def _merge_report(medians: float) -> dict:
    return {
        "ratio_merge_to_copy": {"medians": medians, "best_rounds": medians + 0.05},
        "checkpoint": {"bytes": 1_034_093_280},
        "merge_slerp": {"gb_per_s": 2.0},
        "copy": {"gb_per_s": 4.0},
    }


def test_every_committed_report_gives_its_rows():
    text = perf_table.table(REPORTS)
    for name, (script, _) in perf_table.REPORTS.items():
        assert (REPORTS / name).is_file(), f"docs/benchmarks/{name} is not committed"
        assert f"`{script}`" in text
    assert "no report" not in text
    assert text.count("\n") > len(perf_table.REPORTS) + 2


def test_verdicts_follow_the_target_on_both_sides():
    ((*_, below),) = perf_table.merge_rows(_merge_report(0.59))
    ((*_, above),) = perf_table.merge_rows(_merge_report(0.61))
    assert (below, above) == ("**not met**", "met")
    assert perf_table._verdict(1.02, 1.03, higher=False) == "met"
    assert perf_table._verdict(1.04, 1.03, higher=False) == "**not met**"


def test_missing_reports_are_said_and_the_readme_block_is_replaced(tmp_path):
    folder = tmp_path / "reports"
    folder.mkdir()
    (folder / "merge.json").write_text(json.dumps(_merge_report(0.7)))
    text = perf_table.table(folder)
    assert "merge (SLERP, 1.0 GB) vs a file copy | 0.70x medians" in text
    assert "no report" in text and "pending: no GPU run yet" in text
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{perf_table.BEGIN}\nold\n{perf_table.END}\ntail\n")
    perf_table.replace_block(str(readme), text, perf_table.BEGIN, perf_table.END)
    assert readme.read_text() == f"# x\n{perf_table.BEGIN}\n{text}{perf_table.END}\ntail\n"

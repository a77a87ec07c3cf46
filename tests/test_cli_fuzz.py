"""Every command on a table of bad inputs: non-finite and out-of-range numbers, wrong JSON types,
unreadable and unwritable paths, truncated files, directories for files. Each case must exit 2
with one line naming the culprit, show no traceback, and leave the output as it was (an existing
one unchanged, a new one never started). Commands run in process (`cli.main`) on a tiny model.

`python tests/test_cli_fuzz.py` prints the table (case, command, exit status, message).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import pathlib
import re
import shutil
import sys

import numpy as np
import pytest

from compass_jax import checkpoint, cli
from compass_jax.interop import load_hf
from compass_jax.interop.safetensors_io import SafetensorsFile, save_file

TEXTS = "red running shoes\nblue backpack\n"
TRAIN_CONFIG = {"model": "{model}", "data": {"path": "{pairs}"}, "steps": 2}


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    argv: tuple[str, ...]  # `{key}` placeholders: the assets below, and `{out}` (a fresh folder)
    expect: str  # a regex the error line must match
    output: str | None = None  # the path that must be left as it was
    existing: str | None = None  # "file" | "dir": an output already there


def case(name, argv, expect, output=None, existing=None) -> Case:
    return Case(name, tuple(argv.split()), expect, output, existing)


EMBED = "embed --model {model} --input {texts} --out {out}/e.npy --quiet"
EVAL = "eval --model {model} --out {out}/ev --quiet --suite"
EXPORT = "export --model {model} --out {out}/x --quiet"
MERGE = "merge --models {model} {model} --out {out}/m --quiet"
SWEEP = "merge-sweep --base {model} --tuned {model} --out {out}/s --quiet"
TRAIN = "train --config {train_cfg} --workdir {out}/run --quiet"
BUILD = "data build --out {out}/b --quiet"
E, EV, X, M, S, W = "{out}/e.npy", "{out}/ev", "{out}/x", "{out}/m", "{out}/s", "{out}/run"
# fmt: off
CASES = [
    # embed: numbers, dtype, inputs, outputs, models
    case("batch size 0", f"{EMBED} --batch-size 0", r"--batch-size: must be >= 1, got 0", E),
    case("batch size nan", f"{EMBED} --batch-size nan", r"--batch-size: expected int, got nan", E),
    case("dim negative", f"{EMBED} --dim -5", r"--dim: must be >= 1, got -5", E),
    case("dim above the width", f"{EMBED} --dim 999", r"--dim 999: must be in 1\.\.32", E),
    case("unknown dtype", f"{EMBED} --dtype float16", r"--dtype: expected one of .*float16", E),
    case("missing input", f"{EMBED} --input {{missing}}", r"missing\.txt: no such input file", E),
    case("directory as input", f"{EMBED} --input {{folder}}", r"folder: is a directory", E),
    case("truncated JSONL input", f"{EMBED} --input {{cut_jsonl}}",
         r"cut\.jsonl:2: invalid JSON", E),
    case("input not UTF-8", f"{EMBED} --input {{latin1}}", r"latin1\.txt:2: not valid UTF-8", E),
    case("output is a directory", "embed --model {model} --input {texts} --out {npy_dir}",
         r"--out/--output: .*d\.npy: is a directory, not a file"),
    case("output under a file", "embed --model {model} --input {texts} --out {texts}/e.npy",
         r"texts\.txt is a file, not a directory"),
    case("output exists", EMBED, r"--out .*e\.npy: already exists \(pass --overwrite", E, "file"),
    case("output not .npy", "embed --model {model} --input {texts} --out {out}/e.txt",
         r"e\.txt: must end in \.npy", "{out}/e.txt"),
    case("config.json null width", EMBED.replace("{model}", "{m_null}"),
         r"config\.json: hidden_size: expected int, got None", E),
    case("config.json list width", EMBED.replace("{model}", "{m_list}"),
         r"config\.json: hidden_size: expected int, got \[32\]", E),
    case("config.json zero eps", EMBED.replace("{model}", "{m_eps}"),
         r"config\.json: layer_norm_eps: must be > 0, got 0", E),
    case("config.json a list", EMBED.replace("{model}", "{m_array}"),
         r"config\.json: expected an object, got a list", E),
    case("NaN weights", EMBED.replace("{model}", "{m_nan}"),
         r"'embeddings\.word_embeddings\.weight': 2 of \d+ values are not finite", E),
    case("truncated weights", EMBED.replace("{model}", "{m_cut}"), r"model\.safetensors.*fit", E),
    case("truncated tokenizer", EMBED.replace("{model}", "{m_tok}"),
         r"m_tok: cannot load the tokenizer", E),
    case("modules.json entry", EMBED.replace("{model}", "{m_modules}"),
         r"modules\.json: \[1\]: expected an object, got 3", E),
    case("max_seq_length a word", EMBED.replace("{model}", "{m_stcfg}"),
         r"sentence_bert_config\.json: max_seq_length: expected int, got 'long'", E),
    case("no such model", EMBED.replace("{model}", "{missing}"), r"not a directory, nor a", E),
    case("model without config", EMBED.replace("{model}", "{folder}"), r"no config\.json", E),
    case("workdir run.json a list", EMBED.replace("{model}", "{w_list}"),
         r"w_list/run\.json: expected an object, got a list", E),
    case("checkpoint without state", EMBED.replace("{model}", "{w_nostate}"),
         r"w_nostate/checkpoints/1: cannot read this checkpoint \(KeyError", E),
    case("checkpoint truncated", EMBED.replace("{model}", "{w_cut}"),
         r"w_cut/checkpoints/1: cannot read this checkpoint", E),
    # eval: suite files and outputs
    case("suite is a list", f"{EVAL} {{s_list}}", r"s_list\.json: expected an object, got a", EV),
    case("suite weight -1", f"{EVAL} {{s_neg}}", r"tasks\[0\]\.weight: must be > 0, got -1", EV),
    case("suite weight string", f"{EVAL} {{s_str}}", r"tasks\[0\]\.weight: expected float", EV),
    case("suite weight NaN", f"{EVAL} {{s_nan}}", r"s_nan\.json: NaN is not valid JSON", EV),
    case("suite task type", f"{EVAL} {{s_type}}", r"tasks\[0\]\.type: expected one of", EV),
    case("suite data missing", f"{EVAL} {{s_nodata}}", r"nothing\.jsonl: no such data file", EV),
    case("suite score string", f"{EVAL} {{s_score}}", r"sts\.jsonl:1: score: expected float", EV),
    case("suite truncated", f"{EVAL} {{s_cut}}", r"s_cut\.json:1: invalid JSON", EV),
    case("suite unknown name", f"{EVAL} nope", r"suite 'nope': not a file and not a built-in", EV),
    case("eval output a file", "eval --model {model} --out {texts}",
         r"texts\.txt: is a file, not a directory"),
    case("eval output exists", f"{EVAL} sample", r"--out .*ev: already exists", EV, "dir"),
    # export
    case("min cosine 2", f"{EXPORT} --min-cosine 2", r"--min-cosine: must be <= 1, got 2", X),
    case("min cosine nan", f"{EXPORT} --min-cosine nan", r"--min-cosine: nan is not a finite", X),
    case("matryoshka 0", f"{EXPORT} --matryoshka-dims 0,16", r"\[0\]: must be >= 1, got 0", X),
    case("matryoshka above width", f"{EXPORT} --matryoshka-dims 16,999",
         r"matryoshka_dims \[16, 999\]: each must be in 1\.\.32", X),
    case("shard size", f"{EXPORT} --max-shard-size 5XB", r"cannot read '5XB'", X),
    case("fp8 in fp32", f"{EXPORT} --fp8 --dtype fp32", r"dtype float32 with fp8", X),
    case("calibration truncated", f"{EXPORT} --fp8 --calibration {{cut_jsonl}}",
         r"cut\.jsonl:2: invalid JSON", X),
    case("export output exists", EXPORT, r"--out .*x: already exists", X, "dir"),
    case("export NaN model", EXPORT.replace("{model}", "{m_nan}"), r"values are not finite", X),
    # merge and merge-sweep (the flags)
    case("merge t nan", f"{MERGE} --t nan", r"--t: nan is not a finite number", M),
    case("merge t inf", f"{MERGE} --t inf", r"--t: inf is not a finite number", M),
    case("merge t 1e308", f"{MERGE} --t 1e308", r"--t: must be <= 2\.0, got 1e\+308", M),
    case("merge t below -1", f"{MERGE} --t -1.5", r"--t: must be >= -1\.0, got -1\.5", M),
    case("merge weights nan", f"{MERGE} --method karcher --weights nan 1",
         r"--weights: nan is not a finite number", M),
    case("merge weights negative", f"{MERGE} --method lerp --weights -1 1",
         r"--weights: must be >= 0, got -1", M),
    case("merge tol 0", f"{MERGE} --tol 0", r"--tol: must be > 0, got 0", M),
    case("merge max-iter 0", f"{MERGE} --max-iter 0", r"--max-iter: must be >= 1, got 0", M),
    case("merge output exists", MERGE, r"--out .*m: already exists", M, "dir"),
    case("sweep t nan", f"{SWEEP} --t 0 nan", r"--t: nan is not a finite number", S),
    case("sweep keep fraction", f"{SWEEP} --keep-fraction 1.5", r"must be <= 1, got 1\.5", S),
    # train: overrides, config files, workdir
    case("lr NaN", f"{TRAIN} --set optim.learning_rate=NaN",
         r"--set optim\.learning_rate: nan is not a finite number", W),
    case("temperature 0", f"{TRAIN} --set losses.default.temperature=0",
         r"--set losses\.default\.temperature: must be > 0, got 0", W),
    case("steps -1", f"{TRAIN} --set steps=-1", r"--set steps: must be >= 1, got -1", W),
    case("lr -1", f"{TRAIN} --set optim.learning_rate=-1", r"learning_rate: must be > 0", W),
    case("batch size a list", f"{TRAIN} --set batch_size=[1]", r"expected int, got \[1\]", W),
    case("data a number", f"{TRAIN} --set data=3", r"--set data: expected an object", W),
    case("unknown field", f"{TRAIN} --set stpes=3", r"TrainConfig has no field 'stpes'", W),
    case("config missing", "train --config {missing} --workdir {out}/run",
         r"missing\.txt: no such config file", W),
    case("config a directory", "train --config {folder} --workdir {out}/run",
         r"folder: is a directory, not a config file", W),
    case("config a list", "train --config {json_list} --workdir {out}/run",
         r"list\.json: expected an object, got a list", W),
    case("config truncated", "train --config {json_cut} --workdir {out}/run",
         r"cut\.json:1: invalid JSON", W),
    case("config syntax error", "train --config {py_bad} --workdir {out}/run",
         r"bad\.py:1: invalid syntax", W),
    case("config wrong type", "train --config {train_bad} --workdir {out}/run",
         r"train_bad\.json: steps: expected int, got 'ten'", W),
    case("workdir a file", "train --config {train_cfg} --workdir {texts}",
         r"--workdir: .*texts\.txt: is a file, not a directory"),
    case("processes 0", f"{TRAIN} --num-processes 0", r"--num-processes: must be >= 1", W),
    # data
    case("catalog size -5", "data catalog --out {out}/c --size -5", r"--size: must be >= 1",
         "{out}/c"),
    case("catalog files 0", "data catalog --out {out}/c --files 0", r"--files: must be >= 1",
         "{out}/c"),
    case("catalog seed -1", "data catalog --out {out}/c --seed -1", r"--seed: must be >= 0",
         "{out}/c"),
    case("build size -5", f"{BUILD} --set catalog.generate_size=-5",
         r"--set catalog\.generate_size: must be >= 1, got -5", "{out}/b"),
    case("build partitions nan", f"{BUILD} --set partitions=NaN",
         r"--set partitions: expected int, got nan", "{out}/b"),
    case("build config a list", f"{BUILD} --config {{json_list}}", r"expected an object",
         "{out}/b"),
    case("build config truncated", f"{BUILD} --config {{json_cut}}", r"invalid JSON", "{out}/b"),
    case("export-jsonl suffix", "data export-jsonl --data {folder} --out {out}/t.txt",
         r"t\.txt: must end in \.jsonl", "{out}/t.txt"),
    case("export-jsonl not a build", "data export-jsonl --data {folder} --out {out}/t.jsonl",
         r"not a compass-jax data build", "{out}/t.jsonl"),
    case("suite max 0", "data suite --data {folder} --out {out}/su --max-per-task 0",
         r"--max-per-task: must be >= 1", "{out}/su"),
    case("validate bad catalog", "data validate {cut_jsonl}", r"cut\.jsonl:\d+: "),
    case("general pairs 0", "data general-suite --out {out}/g --pairs-per-language 0",
         r"--pairs-per-language: must be >= 1", "{out}/g"),
    # serve-command, demo
    case("serve a file", "serve-command {texts}", r"texts\.txt: not a directory"),
    case("serve dim 0", "serve-command {model} --dim 0", r"--dim: must be >= 1, got 0"),
    case("serve config a list", "serve-command {m_array}", r"expected an object, got a list"),
    case("demo devices 0", "demo --out {out}/d --devices 0", r"--devices: must be >= 1", "{out}/d"),
    case("demo size", "demo --out {out}/d --size huge", r"--size: invalid choice", "{out}/d"),
    case("demo out a file", "demo --out {texts}", r"texts\.txt: is a file, not a directory"),
]
if hasattr(os, "geteuid") and os.geteuid() != 0:  # root writes anywhere
    CASES.append(case("read-only folder", "embed --model {model} --input {texts} "
                      "--out {readonly}/e.npy", r"readonly/e\.npy: cannot write in"))
# fmt: on


def _edit_config(model: pathlib.Path, edit) -> None:
    path = model / "config.json"
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))


def make_assets(root: pathlib.Path) -> dict[str, str]:
    """A tiny model and its broken copies, inputs, suites and configs, good and bad."""
    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    from train_fixtures import make_model_dir, make_pairs

    model = make_model_dir(root)
    assets = {"model": model, "pairs": make_pairs(root / "pairs.jsonl")}
    assets["texts"] = root / "texts.txt"
    assets["texts"].write_text(TEXTS)
    assets["missing"] = root / "missing.txt"
    assets["folder"] = root / "folder"
    assets["folder"].mkdir()
    assets["npy_dir"] = root / "d.npy"
    assets["npy_dir"].mkdir()
    assets["cut_jsonl"] = root / "cut.jsonl"
    assets["cut_jsonl"].write_text('{"text": "fine", "id": "a"}\n{"text": "cu')
    assets["latin1"] = root / "latin1.txt"
    assets["latin1"].write_bytes("ok\nsapato café\n".encode("latin-1"))
    broken = {
        "m_null": lambda c: {**c, "hidden_size": None},
        "m_list": lambda c: {**c, "hidden_size": [32]},
        "m_eps": lambda c: {**c, "layer_norm_eps": 0},
        "m_array": lambda c: [c],
    }
    for name, edit in {**broken, **dict.fromkeys(("m_nan", "m_cut", "m_tok", "m_modules",
                                                   "m_stcfg"))}.items():  # fmt: skip
        copy = root / name
        shutil.copytree(model, copy)
        assets[name] = copy
        if edit is not None:
            _edit_config(copy, edit)
    weights = assets["m_nan"] / "model.safetensors"
    st = SafetensorsFile(weights)
    tensors = {k: np.array(st.read(k)) for k in st.names()}
    tensors["embeddings.word_embeddings.weight"][3, :2] = [np.nan, np.inf]
    save_file(tensors, weights)
    cut = assets["m_cut"] / "model.safetensors"
    cut.write_bytes(cut.read_bytes()[:-1000])
    cut = assets["m_tok"] / "tokenizer.json"
    cut.write_bytes(cut.read_bytes()[:500])
    (assets["m_modules"] / "modules.json").write_text('[{"type": "m.Transformer"}, 3]')
    (assets["m_stcfg"] / "sentence_bert_config.json").write_text('{"max_seq_length": "long"}')
    (root / "bt.jsonl").write_text('{"source": "a", "target": "b"}\n')
    (root / "sts.jsonl").write_text('{"a": "x", "b": "y", "score": "high"}\n')
    task = {"name": "t", "type": "bitext", "data": "bt.jsonl"}
    suites = {
        "s_list": [task],
        "s_neg": {"tasks": [{**task, "weight": -1}]},
        "s_str": {"tasks": [{**task, "weight": "heavy"}]},
        "s_type": {"tasks": [{**task, "type": "ranking"}]},
        "s_nodata": {"tasks": [{**task, "data": "nothing.jsonl"}]},
        "s_score": {"tasks": [{**task, "type": "sts", "data": "sts.jsonl"}]},
    }
    for name, spec in suites.items():
        assets[name] = root / f"{name}.json"
        assets[name].write_text(json.dumps(spec))
    assets["s_nan"] = root / "s_nan.json"
    assets["s_nan"].write_text('{"tasks": [{"name": "t", "type": "bitext", "data": "bt.jsonl", '
                               '"weight": NaN}]}')  # fmt: skip
    assets["s_cut"] = root / "s_cut.json"
    assets["s_cut"].write_text('{"tasks": [')
    assets["json_list"] = root / "list.json"
    assets["json_list"].write_text("[1, 2]")
    assets["json_cut"] = root / "cut.json"
    assets["json_cut"].write_text('{"steps": ')
    assets["py_bad"] = root / "bad.py"
    assets["py_bad"].write_text("def get_config(:\n")
    train = json.loads(json.dumps(TRAIN_CONFIG).replace("{model}", str(model)))
    train["data"]["path"] = str(assets["pairs"])
    assets["train_cfg"] = root / "train.json"
    assets["train_cfg"].write_text(json.dumps(train))
    assets["train_bad"] = root / "train_bad.json"
    assets["train_bad"].write_text(json.dumps({**train, "steps": "ten"}))
    cfg, params = load_hf(model)
    for name in ("w_list", "w_nostate", "w_cut"):  # training workdirs, damaged
        assets[name] = workdir = root / name
        workdir.mkdir()
        checkpoint.write_run_info(str(workdir), {"model": str(model)}, str(model), cfg)
        saver = checkpoint.Checkpointer(str(workdir))
        saver.save(1, {"params": params, "step": np.int32(1)}, {"position": 1})
        saver.close()
    (root / "w_list" / "run.json").write_text("[]")
    shutil.rmtree(root / "w_nostate" / "checkpoints" / "1" / "state")
    for path in (root / "w_cut" / "checkpoints" / "1" / "state").rglob("*"):
        if path.is_file() and path.stat().st_size > 1000:
            path.write_bytes(path.read_bytes()[:100])
    assets["readonly"] = root / "readonly"
    assets["readonly"].mkdir()
    assets["readonly"].chmod(0o555)
    return {k: str(v) for k, v in assets.items()}


def _fill(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], text)


def _snapshot(path: pathlib.Path) -> dict[str, bytes] | None:
    if not path.exists():
        return None
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def run_case(c: Case, assets: dict[str, str], out: pathlib.Path) -> tuple[int, str, bool]:
    """`(exit status, stderr, output left as it was)` of one case, run in process."""
    out.mkdir(parents=True, exist_ok=True)
    values = {**assets, "out": str(out)}
    target = pathlib.Path(_fill(c.output, values)) if c.output else None
    if c.existing == "file":
        target.write_bytes(b"an earlier result")
    elif c.existing == "dir":
        target.mkdir()
        (target / "results.json").write_text('{"earlier": true}')
    before = _snapshot(target) if target else None
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main([_fill(a, values) for a in c.argv])
    kept = target is None or (
        _snapshot(target) == before and not list(target.parent.glob(f".tmp-{target.name}-*"))
    )
    return code, err.getvalue(), kept


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("fuzz"))


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_written(c, assets, tmp_path, monkeypatch):
    monkeypatch.setenv("COMPASS_JAX_CACHE", str(tmp_path / "cache"))
    code, err, kept = run_case(c, assets, tmp_path / "out")
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    assert code == 2, err
    assert "Traceback" not in err, err
    assert len(errors) == 1 and errors[-1] == lines[-1], err
    assert re.search(c.expect, errors[0]), errors[0]
    assert kept, "the output changed"


def test_the_table_covers_every_command():
    commands = {c.argv[0] for c in CASES}
    assert commands == set(cli.COMMANDS)


if __name__ == "__main__":  # the table for a report: case | command | exit | message
    import tempfile

    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["COMPASS_JAX_CACHE"] = os.path.join(tmp, "cache")
        found = make_assets(pathlib.Path(tmp))
        print("| case | command | exit | message |\n|---|---|---|---|")
        for i, c in enumerate(CASES):
            out = pathlib.Path(tmp, f"out{i}")
            out.mkdir()
            code, err, kept = run_case(c, found, out)
            line = [x for x in err.splitlines() if "error:" in x][-1:] or [err.strip()]
            message = line[0].replace(tmp, "…").replace("|", "\\|")
            print(f"| {c.name} | {c.argv[0]} | {code}{'' if kept else ' (output changed!)'} | "
                  f"`{message}` |")  # fmt: skip

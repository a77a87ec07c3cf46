"""The config engine shared by training experiments and data builds: every way in (JSON file,
Python file, `--set`, a command-line flag) checks types, finiteness and declared ranges, and the
error names the source and the dotted field."""

import argparse
import dataclasses
import json

import pytest

from compass_jax import configio
from compass_jax.configio import ConfigError
from compass_jax.experiment import TrainConfig
from compass_jax.losses import LossSettings
from pipelines.config import BuildConfig, load_config


def _json(tmp_path, value, name="cfg.json"):
    path = tmp_path / name
    path.write_text(json.dumps(value))
    return path


def _python(tmp_path, body, name="exp.py"):
    path = tmp_path / name
    path.write_text(
        "from compass_jax.experiment import TrainConfig, DataConfig\n"
        "from compass_jax.losses import LossSettings\n"
        "from compass_jax.optim import OptimConfig\n\n"
        f"def get_config():\n    return {body}\n"
    )
    return path


def test_unknown_key_names_file_and_dotted_field(tmp_path):
    path = _json(tmp_path, {"catalog": {"generate_sise": 10}})
    with pytest.raises(ConfigError, match=r"cfg\.json: catalog\.generate_sise: CatalogConfig has "
                       r"no field 'generate_sise' \(paths, generate_size,"):  # fmt: skip
        load_config(path)
    with pytest.raises(ConfigError, match=r"^--set mining\.teachr: MiningConfig has no field"):
        load_config(None, ["mining.teachr=hashing"])


def test_wrong_types_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"cfg\.json: partitions: expected int, got '4'"):
        load_config(_json(tmp_path, {"partitions": "4"}))
    with pytest.raises(ConfigError, match=r"cfg\.json: catalog: expected an object"):
        load_config(_json(tmp_path, {"catalog": [1]}))
    with pytest.raises(ValueError, match=r"cfg\.json: expected an object, got a list"):
        load_config(_json(tmp_path, [1, 2]))
    with pytest.raises(ConfigError, match=r"--set loss_block: expected 2 items"):
        configio.override(TrainConfig(), ["loss_block=[8, 8, 8]"])
    with pytest.raises(ConfigError, match=r"--set dtype: expected one of \['bf16', 'bfloat16', "):
        configio.override(TrainConfig(), ["dtype=float16"])
    assert configio.override(TrainConfig(), ["dtype=bf16"]).dtype == "bfloat16"  # spellings
    path = _python(tmp_path, 'TrainConfig(data=DataConfig(query_length="64"))')
    with pytest.raises(ConfigError, match=r"exp\.py: data\.query_length: expected int"):
        configio.load(path, TrainConfig)


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_floats_are_refused(tmp_path, text):
    with pytest.raises(ConfigError, match=r"--set optim\.learning_rate: -?(nan|inf) is not a fin"):
        configio.override(TrainConfig(), [f"optim.learning_rate={text}"])
    with pytest.raises(ConfigError, match=r"--set losses\.default\.margin: .* not a finite"):
        configio.override(TrainConfig(), [f"losses.default.margin={text}"])
    path = _python(tmp_path, f'TrainConfig(data=DataConfig(task_weights={{"a": float("{text}")}}))')
    with pytest.raises(ConfigError, match=r"exp\.py: data\.task_weights\.a: .* not a finite"):
        configio.load(path, TrainConfig)
    # A JSON file cannot even spell them (strict JSON).
    (tmp_path / "nan.json").write_text('{"filters": {"min_script_share": NaN}}')
    with pytest.raises(ValueError, match=r"nan\.json: NaN is not valid JSON"):
        load_config(tmp_path / "nan.json")


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("steps=0", "steps: must be >= 1, got 0"),
        ("batch_size=-1", "batch_size: must be >= 1, got -1"),
        ("optim.learning_rate=-1", r"optim\.learning_rate: must be > 0, got -1\.0"),
        ("losses.default.temperature=0", r"losses\.default\.temperature: must be > 0, got 0\.0"),
        ("optim.b2=1", r"optim\.b2: must be < 1, got 1\.0"),
        ("gradcache_chunk=0", "gradcache_chunk: must be >= 1, got 0"),
        ("data.num_negatives=-2", r"data\.num_negatives: must be >= 0, got -2"),
    ],
)
def test_out_of_range_overrides_are_refused(assignment, message):
    with pytest.raises(ConfigError, match=rf"^--set {message}$"):
        configio.override(TrainConfig(), [assignment])


def test_ranges_hold_for_files_and_data_builds(tmp_path):
    path = _python(tmp_path, 'TrainConfig(losses={"default": LossSettings(temperature=0.0)})')
    with pytest.raises(ConfigError, match=r"exp\.py: losses\.default\.temperature: must be > 0"):
        configio.load(path, TrainConfig)
    with pytest.raises(ConfigError, match=r"--set catalog\.generate_size: must be >= 1, got -5"):
        load_config(None, ["catalog.generate_size=-5"])
    with pytest.raises(ConfigError, match=r"cfg\.json: splits\.test: must be <= 1, got 2\.0"):
        load_config(_json(tmp_path, {"splits": {"train": 0.5, "test": 2.0}}))
    with pytest.raises(ConfigError, match=r"splits: expected one of \['train', 'validation'"):
        load_config(_json(tmp_path, {"splits": {"train": 0.5, "dev": 0.5}}))


def test_dotted_overrides_reach_nested_sections_and_per_task_entries(tmp_path):
    base = TrainConfig(losses={"default": LossSettings(temperature=0.05, margin=0.1)})
    cfg = configio.override(base, ["optim.learning_rate=3e-4", "losses.retrieval.temperature=1",
                                   "mesh.fsdp=2", "optim.frozen=[\"^embeddings\"]"])  # fmt: skip
    assert cfg.optim.learning_rate == 3e-4 and cfg.mesh.fsdp == 2
    # A new per-task entry starts from "default"; the value is converted to the field's type.
    retrieval = cfg.losses["retrieval"]
    assert retrieval == LossSettings(temperature=1.0, margin=0.1)
    assert type(retrieval.temperature) is float
    assert cfg.losses["default"] == base.losses["default"] and base.optim.learning_rate == 2e-5
    assert cfg.optim.frozen == ("^embeddings",)
    # An absent optional section starts from its defaults; a whole section can be set as JSON.
    no_synthesis = load_config(_json(tmp_path, {"synthesis": None}))
    assert no_synthesis.synthesis is None
    again = load_config(tmp_path / "cfg.json", ["synthesis.fraction=0.5"])
    assert again.synthesis.fraction == 0.5 and again.synthesis.queries_per_product == 2
    whole = configio.override(base, ['optim={"learning_rate": 0.001, "warmup_steps": 0}'])
    assert whole.optim.learning_rate == 1e-3 and whole.optim.warmup_steps == 0


def test_round_trip_through_json_is_exact():
    cfg = configio.override(TrainConfig(), ["losses.retrieval.margin=0.2", "loss_block=[4, 8]"])
    again = configio.build(TrainConfig, json.loads(json.dumps(configio.to_json(cfg))), "x")
    assert again == cfg
    built = load_config()
    assert configio.build(BuildConfig, configio.to_json(built), "x") == built


def test_python_config_may_return_a_dict_and_must_define_get_config(tmp_path):
    path = tmp_path / "build.py"
    path.write_text("def get_config():\n    return {'partitions': 3}\n")
    assert load_config(path).partitions == 3
    (tmp_path / "empty.py").write_text("x = 1\n")
    with pytest.raises(ConfigError, match=r"empty\.py: defines no get_config\(\)"):
        configio.load(tmp_path / "empty.py", TrainConfig)
    path = _python(tmp_path, "[1, 2]", name="list.py")
    with pytest.raises(ConfigError, match=r"list\.py: get_config\(\) returned list"):
        configio.load(path, TrainConfig)


def test_flags_are_checked_like_fields(capsys):
    parser = argparse.ArgumentParser(prog="x")
    parser.add_argument("--t", type=configio.flag_type(configio.Fraction, "--t"))
    assert parser.parse_args(["--t", "0.25"]).t == 0.25
    for bad, message in (("nan", "nan is not a finite number"), ("1.5", "must be <= 1, got 1.5")):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(["--t", bad])
        assert exit_info.value.code == 2
        assert f"argument --t: {message}" in capsys.readouterr().err


def test_direct_construction_is_not_validated_until_an_edge():
    """Library code may build configs freely; files, flags and --set are the edges."""
    raw = dataclasses.replace(TrainConfig(), steps=0)
    with pytest.raises(ConfigError, match=r"^run\.py: steps: must be >= 1, got 0$"):
        configio.validate(raw, "run.py")

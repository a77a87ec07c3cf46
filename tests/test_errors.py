"""Bad input gets a clear error that names what is wrong (file, line, key, field)."""

import json
import shutil

import numpy as np
import pytest
from tiny import bert, qwen3, randomize, save

from compass_jax import cli
from compass_jax.config import ConfigError
from compass_jax.interop import CheckpointError, load_hf
from compass_jax.interop.safetensors_io import SafetensorsError, SafetensorsFile, save_file
from compass_jax.textio import InputError, read_texts


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return save(randomize(bert(), seed=0), tmp_path_factory.mktemp("bert"))


def _copy(src, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(src, dst)
    return dst


def _edit_weights(model_dir, edit):
    path = model_dir / "model.safetensors"
    st = SafetensorsFile(path)
    tensors = {k: np.array(st.read(k)) for k in st.names()}
    edit(tensors)
    save_file(tensors, path)


def _edit_config(model_dir, edit):
    path = model_dir / "config.json"
    cfg = json.loads(path.read_text())
    edit(cfg)
    path.write_text(json.dumps(cfg))


def test_missing_directory_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_hf(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        load_hf(tmp_path)


def test_missing_weights_names_directory(bert_dir, tmp_path):
    model = _copy(bert_dir, tmp_path)
    (model / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
        load_hf(model)


def test_wrong_shape_unknown_key_and_missing_key_reported_together(bert_dir, tmp_path):
    model = _copy(bert_dir, tmp_path)

    def edit(t):
        t["encoder.layer.1.attention.self.query.weight"] = np.zeros((48, 47), np.float32)
        t["encoder.layer.0.surprise.weight"] = np.zeros((3,), np.float32)
        del t["encoder.layer.2.output.dense.bias"]

    _edit_weights(model, edit)
    with pytest.raises(CheckpointError) as err:
        load_hf(model)
    message = str(err.value)
    assert len(err.value.problems) == 3
    assert "encoder.layer.1.attention.self.query.weight" in message and "(47, 48)" in message
    assert "'encoder.layer.0.surprise.weight' matches no rule" in message
    assert "layers.2.mlp.down_proj.bias" in message


def test_truncated_safetensors_names_file(bert_dir, tmp_path):
    model = _copy(bert_dir, tmp_path)
    path = model / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(SafetensorsError, match=r"model\.safetensors.*do not fit"):
        load_hf(model)


def test_unsupported_architecture(bert_dir, tmp_path):
    model = _copy(bert_dir, tmp_path)
    _edit_config(model, lambda c: c.update(model_type="gpt2"))
    with pytest.raises(ConfigError, match=r"config\.json: model_type 'gpt2' is not supported"):
        load_hf(model)


def test_unsupported_config_fields(tmp_path):
    model = save(qwen3(), tmp_path / "qwen3")
    _edit_config(model, lambda c: c.update(rope_parameters={"rope_type": "yarn", "factor": 4.0}))
    with pytest.raises(ConfigError, match=r"rope_parameters.*'yarn'"):
        load_hf(model)
    _edit_config(model, lambda c: c.update(rope_parameters=None, new_attention_trick=True))
    with pytest.raises(ConfigError, match="new_attention_trick"):
        load_hf(model)
    _edit_config(model, lambda c: c.update(new_attention_trick=None, use_sliding_window=True))
    with pytest.raises(ConfigError, match="use_sliding_window"):
        load_hf(model)


def test_relative_position_bert_refused(bert_dir, tmp_path):
    model = _copy(bert_dir, tmp_path)
    _edit_config(model, lambda c: c.update(position_embedding_type="relative_key"))
    with pytest.raises(ConfigError, match="position_embedding_type"):
        load_hf(model)


def test_input_errors_name_file_and_line(tmp_path):
    empty = tmp_path / "a.txt"
    empty.write_text("first\n\nthird\n")
    with pytest.raises(InputError, match=r"a\.txt:2: empty text"):
        read_texts(empty)
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"ok\n\xff\xfe bad\n")
    with pytest.raises(InputError, match=r"b\.txt:2: not valid UTF-8"):
        read_texts(binary)
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"text": "fine"}\n{"title": "no text field"}\n')
    with pytest.raises(InputError, match=r"c\.jsonl:2: expected an object with a string field"):
        read_texts(jsonl)
    broken = tmp_path / "d.jsonl"
    broken.write_text('{"text": "fine"}\n{"text": \n')
    with pytest.raises(InputError, match=r"d\.jsonl:2: invalid JSON"):
        read_texts(broken)
    nan = tmp_path / "n.jsonl"
    nan.write_text('{"text": "fine"}\n{"text": "x", "score": NaN}\n')
    with pytest.raises(InputError, match=r"n\.jsonl:2: NaN is not valid JSON"):
        read_texts(nan)
    other = tmp_path / "e.csv"
    other.write_text("a,b\n")
    with pytest.raises(InputError, match=r"e\.csv: input must be \.txt"):
        read_texts(other)


def test_cli_reports_errors_and_keeps_existing_output(bert_dir, tmp_path, capsys):
    out = tmp_path / "keep.npy"
    np.save(out, np.ones(3))
    src = tmp_path / "in.txt"
    src.write_text("ok\n\n")
    argv = ["embed", "--model", str(bert_dir), "--input", str(src), "--output", str(out)]
    code = cli.main([*argv, "--overwrite"])  # a failed run keeps the output it would replace
    assert code == 2
    assert "in.txt:2: empty text" in capsys.readouterr().err
    np.testing.assert_array_equal(np.load(out), np.ones(3))  # nothing already written is lost

"""Bad input to training and evaluation: one clear line each, exit code 2, nothing half-written."""
from __future__ import annotations

import re
import shutil

import pytest
import yaml

from tests.synthetic_pickles import write_cosmic_iemocap
from tests.train_fixtures import tiny_config, write_config, write_dialoguernn_iemocap
from train.common import run_cli


def _train(argv):
    from train.__main__ import main

    return run_cli(main, argv)


def _evaluate(argv):
    from train.evaluate import main

    return run_cli(main, argv)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    lines = [l for l in err.splitlines() if l.startswith("error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dialoguernn_iemocap(tmp_path_factory.mktemp("d") / "feats.pkl", n_train=12, n_test=3, seed=4)


@pytest.fixture(scope="module")
def model(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("m")
    cfg = write_config(tmp / "cfg.yaml", tiny_config(train={"epochs": 1}))
    out = tmp / "model"
    assert _train(["--config", str(cfg), "--data", str(data), "--out", str(out), "--no-progress"]) == 0
    return out


def test_unknown_config_key(tmp_path, data, capsys):
    raw = tiny_config()
    raw["model"]["hiden"] = 64
    cfg = write_config(tmp_path / "typo.yaml", raw)
    out = tmp_path / "out"
    assert _train(["--config", str(cfg), "--data", str(data), "--out", str(out)]) == 2
    line = _one_line_error(capsys)
    assert "unknown config key 'model.hiden'" in line and "typo.yaml" in line
    assert not out.exists()


def test_unknown_key_in_set_override(tmp_path, data, capsys):
    cfg = write_config(tmp_path / "ok.yaml", tiny_config())
    assert _train(["--config", str(cfg), "--data", str(data), "--set", "train.learning_rate=0.1"]) == 2
    assert "unknown config key 'train.learning_rate'" in _one_line_error(capsys)


@pytest.mark.parametrize("section,key,value,message", [
    ("train", "lr", "fast", "train.lr: expected a number (float), got 'fast'"),
    ("model", "dropout", "high", "model.dropout: expected a number (float), got 'high'"),
    ("train", "seeds", [0, "one"], "train.seeds[1]: expected int, got 'one'"),
    ("data", "extractors", {"text": 3}, "data.extractors.text: expected str, got 3"),
    ("data", "modalities", "text", "data.modalities: expected a list of str, got 'text'"),
    ("adversarial", "schedule", "sometimes", "adversarial.schedule: expected one of 'paper', 'alternating', 'grl', got 'sometimes'"),
    ("graph", "past", 2.5, "graph.past: expected int, got 2.5"),
])
def test_wrongly_typed_value_is_refused_before_any_work(tmp_path, data, capsys, section, key, value, message):
    """Every typed field is checked at load time (floats, lists, dicts, Literals too): once, a
    float field given a word trained for 100 s and died with a TypeError traceback."""
    raw = tiny_config()
    raw.setdefault(section, {})[key] = value
    cfg = write_config(tmp_path / "bad.yaml", raw)
    out = tmp_path / "out"
    assert _train(["--config", str(cfg), "--data", str(data), "--out", str(out)]) == 2
    line = _one_line_error(capsys)
    assert line.endswith(f"bad.yaml: {message}"), line
    assert not out.exists()


def test_wrongly_typed_value_through_set(tmp_path, data, capsys):
    cfg = write_config(tmp_path / "ok.yaml", tiny_config())
    out = tmp_path / "out"
    assert _train(["--config", str(cfg), "--data", str(data), "--out", str(out), "--set", "train.lr=fast"]) == 2
    line = _one_line_error(capsys)
    assert "--set train.lr=fast" in line and "train.lr: expected a number (float), got 'fast'" in line, line
    assert not out.exists()


def test_float_written_without_a_dot_is_a_number(tmp_path):
    """YAML 1.1 reads ``1e-3`` as a string; a float field takes it as the number meant."""
    from train.config import config_from_dict

    raw = tiny_config()
    raw["train"]["lr"] = "1e-3"
    assert config_from_dict(raw).train.lr == 0.001


def test_runtime_config_fields_are_typed(tmp_path):
    from runtime.config import load_runtime_config
    from train.common import InputError

    for text, message in [("speakers:\n  n_speakers: two\n", "speakers.n_speakers: expected int or null, got 'two'"),
                          ("asr:\n  context_s: long\n", "asr.context_s: expected a number (float), got 'long'"),
                          ("vad:\n  model: 3\n", "vad.model: expected str or null, got 3")]:
        path = tmp_path / "runtime.yaml"
        path.write_text(text)
        with pytest.raises(InputError, match=re.escape(message)):
            load_runtime_config(path)
    path.write_text("speakers:\n  n_speakers: null\n")
    assert load_runtime_config(path).speakers.n_speakers is None


def test_modality_the_data_lacks(tmp_path, capsys):
    # COSMIC layout: transcripts only, no feature arrays; the config asks for audio with no extractor.
    syn = write_cosmic_iemocap(tmp_path / "cosmic.pkl", n_dialogues=8, n_valid=1, n_test=1)
    cfg = write_config(tmp_path / "audio.yaml", tiny_config(modalities=("audio",)))
    out = tmp_path / "out"
    assert _train(["--config", str(cfg), "--data", str(syn.path), "--out", str(out)]) == 2
    line = _one_line_error(capsys)
    assert "modality 'audio'" in line and "cosmic.pkl" in line and "no feature arrays" in line
    assert not out.exists()


def test_modality_missing_from_feature_pickle_names_what_is_there(tmp_path, capsys):
    from tests.synthetic_pickles import write_dialoguernn_meld

    # DialogueRNN's MELD layout has text and audio but no visual field.
    syn = write_dialoguernn_meld(tmp_path / "MELD_features_raw.pkl", dims={"text": 8, "audio": 4})
    cfg = write_config(tmp_path / "vis.yaml", tiny_config(modalities=("text", "visual"), data={"dataset": "meld"}))
    assert _train(["--config", str(cfg), "--data", str(syn.path)]) == 2
    line = _one_line_error(capsys)
    assert "modality 'visual'" in line and "text (8-d)" in line and "audio (4-d)" in line


def test_feature_dimension_differs_from_the_model(tmp_path, model, capsys):
    wide = write_dialoguernn_iemocap(tmp_path / "wide.pkl", n_train=6, n_test=3, dims={"text": 20, "audio": 4,
                                                                                         "visual": 4})
    assert _evaluate(["--model", str(model), "--data", str(wide), "--split", "test"]) == 2
    line = _one_line_error(capsys)
    assert "text features are 20-d but the model expects 16-d" in line
    assert "wide.pkl" in line


@pytest.mark.parametrize("missing", ["model.safetensors", "config.yaml", "manifest.json"])
def test_model_directory_missing_a_file(tmp_path, model, data, missing, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(model, broken)
    (broken / missing).unlink()
    assert _evaluate(["--model", str(broken), "--data", str(data), "--split", "test"]) == 2
    line = _one_line_error(capsys)
    assert f"model directory is missing {missing}" in line and "broken" in line


def test_weights_that_do_not_fit_the_config(tmp_path, model, data, capsys):
    broken = tmp_path / "resized"
    shutil.copytree(model, broken)
    raw = yaml.safe_load((broken / "config.yaml").read_text())
    raw["model"]["hidden"] = 24
    (broken / "config.yaml").write_text(yaml.safe_dump(raw))
    assert _evaluate(["--model", str(broken), "--data", str(data), "--split", "test"]) == 2
    line = _one_line_error(capsys)
    assert "weights do not match" in line and "model.safetensors" in line
    assert "has shape" in line and "24" in line  # names the first tensor whose shape differs, and both shapes


def test_no_such_model(data, capsys):
    assert _evaluate(["--model", "no-such-model", "--data", str(data), "--split", "test"]) == 2
    line = _one_line_error(capsys)
    assert "no-such-model" in line and "no such model directory or model name" in line


def test_missing_config_file(capsys, tmp_path):
    assert _train(["--config", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in _one_line_error(capsys)


def test_dataset_other_than_the_config_says(tmp_path, data, capsys):
    cfg = write_config(tmp_path / "meld.yaml", tiny_config(data={"dataset": "meld"}))
    assert _train(["--config", str(cfg), "--data", str(data)]) == 2
    assert "meld" in _one_line_error(capsys)


def test_debug_keeps_the_traceback(tmp_path, data):
    raw = tiny_config()
    raw["train"]["epoch"] = 3
    cfg = write_config(tmp_path / "t.yaml", raw)
    from train.common import InputError

    with pytest.raises(InputError):
        _train(["--config", str(cfg), "--data", str(data), "--debug"])


def test_threads_must_be_positive(tmp_path, data, capsys):
    cfg = write_config(tmp_path / "ok.yaml", tiny_config())
    assert _train(["--config", str(cfg), "--data", str(data), "--threads", "0"]) == 2
    assert "--threads must be >= 1" in _one_line_error(capsys)

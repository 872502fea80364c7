"""``python -m train.data``: the summary, its JSON, and one-line errors with exit code 2."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests import synthetic_pickles as sp

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "train.data", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def need(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"{path} absent: put the shared data beside the repository (../shared/data) to run this test")


def test_json_real_iemocap():
    pkl = DATA / "iemocap" / "iemocap_trainval.pkl"
    need(pkl)
    r = run(pkl, "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["dataset"] == "iemocap" and s["format"] == "cosmic"
    assert s["labels"] == ["happy", "sad", "neutral", "angry", "excited", "frustrated"]
    assert s["splits"]["train"]["dialogues"] == 108 and s["splits"]["valid"]["dialogues"] == 12
    assert s["splits"]["test"] == {"dialogues": 0, "utterances": 0, "label_counts": {k: 0 for k in s["labels"]}}
    assert s["splits"]["train"]["utterances"] + s["splits"]["valid"]["utterances"] == 5810
    assert sum(s["splits"]["train"]["label_counts"].values()) == s["splits"]["train"]["utterances"]
    assert s["modalities"] == {} and s["speakers"] == {"count": 2, "examples": ["F", "M"]}
    assert isinstance(s["notes"], list)


def test_text_summary_real_meld():
    pkl = DATA / "meld" / "meld_trainval.pkl"
    need(pkl)
    r = run(pkl, "--dataset", "meld")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "dataset:    meld (format: cosmic)" in out
    assert "0 neutral, 1 surprise, 2 fear, 3 sadness, 4 joy, 5 disgust, 6 anger" in out
    assert "train          1038        9989" in out and "valid           114        1109" in out
    assert "speakers:   9" in out and "notes:" in out


def test_json_synthetic_multimodal_with_carved_validation(tmp_path):
    syn = sp.write_mmgcn_meld(tmp_path / "MELD_features_raw1.pkl", n_dialogues=21, n_test=1,
                              dims={"text": 16, "audio": 12, "visual": 8})
    r = run(syn.path, "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["format"] == "mmgcn" and s["modalities"] == {"audio": 12, "text": 16, "visual": 8}
    assert s["splits"]["valid"]["dialogues"] == 2 and s["splits"]["train"]["dialogues"] == 18
    assert s["splits"]["test"]["utterances"] == syn.utterances(syn.test_ids)
    assert any("first 2 of 20" in n for n in s["notes"])
    r = run(syn.path)
    assert "modalities: audio 12-d, text 16-d, visual 8-d" in r.stdout and "first 2 of 20" in r.stdout


def _assert_one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    assert r.stdout == ""


def test_missing_file_error(tmp_path):
    _assert_one_line_error(run(tmp_path / "absent.pkl"), f"error: {tmp_path / 'absent.pkl'}: no such file")


def test_bad_feature_dimension_error_and_debug(tmp_path):
    syn = sp.make_dialoguernn_iemocap(dims={"text": 6, "audio": 5, "visual": 4})
    did = syn.train_ids[2]
    syn.obj[5][did] = [np.zeros(3, np.float32) for _ in syn.obj[5][did]]
    path = sp.write_pickle(tmp_path / "IEMOCAP_features.pkl", syn.obj)
    _assert_one_line_error(run(path), f"error: {path}: dialogue '{did}': visual features are 3-d")
    r = run(path, "--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr and "InputError" in r.stderr


def test_wrong_layout_and_dataset_errors(tmp_path):
    path = sp.write_pickle(tmp_path / "odd.pkl", [1, 2, 3, 4])
    _assert_one_line_error(run(path), "wrong layout: a list of 4 fields")
    syn = sp.write_cosmic_iemocap(tmp_path / "iemocap.pkl")
    _assert_one_line_error(run(syn.path, "--dataset", "meld"), "'meld' requested")


def test_malicious_pickle_cli(tmp_path):
    target = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {target}",)

    path = tmp_path / "IEMOCAP_features.pkl"
    path.write_bytes(pickle.dumps([Evil()] + [{}] * 8, protocol=2))
    _assert_one_line_error(run(path), f"error: {path}: refused to unpickle global {os.system.__module__}.system")
    assert not target.exists()

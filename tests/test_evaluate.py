"""`python -m train.evaluate`: scoring a model directory or a shipped model on one split."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train_fixtures import tiny_config, write_config, write_dialoguernn_iemocap
from train.data.corpus import IEMOCAP_LABELS, MELD_LABELS

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    data = write_dialoguernn_iemocap(tmp / "full.pkl", n_train=20, n_test=8, noise=0.6, seed=2)
    cfg = write_config(tmp / "cfg.yaml", tiny_config(train={"epochs": 12, "patience": 12}))
    from train.__main__ import main

    out = tmp / "model"
    assert main(["--config", str(cfg), "--data", str(data), "--out", str(out), "--no-progress"]) == 0
    return tmp, data, out


def test_json_report_on_test_split(setup, capsys):
    from train.data import load_corpus
    from train.evaluate import main

    _, data, model = setup
    assert main(["--model", str(model), "--data", str(data), "--split", "test", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    n_test = sum(len(d) for d in load_corpus(data).split("test"))
    assert report["n"] == n_test
    assert report["split"] == "test"
    for key in ("accuracy", "weighted_f1"):
        assert 0.0 <= report[key] <= 100.0
    assert set(report["per_class_f1"]) == set(IEMOCAP_LABELS)
    assert all(0.0 <= v <= 100.0 for v in report["per_class_f1"].values())
    assert report["accuracy"] > 50.0  # the synthetic classes are separable: percent, not a fraction


def test_text_report_and_confusion_png(setup, capsys, tmp_path):
    from train.evaluate import main

    _, data, model = setup
    png = tmp_path / "cm.png"
    assert main(["--model", str(model), "--data", str(data), "--split", "valid", "--confusion", str(png)]) == 0
    out = capsys.readouterr().out
    assert "weighted F1" in out and "frustrated" in out
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_empty_split_is_a_clear_error(setup, tmp_path, capsys):
    from train.common import run_cli
    from train.evaluate import main

    _, _, model = setup
    no_test = write_dialoguernn_iemocap(tmp_path / "trainval.pkl", n_train=10, n_test=0)
    assert run_cli(main, ["--model", str(model), "--data", str(no_test), "--split", "test"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "test split is empty" in err and "trainval.pkl" in err
    assert len(err.splitlines()) == 1


def test_unknown_backend_names_the_available_ones(setup, capsys):
    from train.common import run_cli
    from train.evaluate import main

    _, data, model = setup
    assert run_cli(main, ["--model", str(model), "--data", str(data), "--split", "valid", "--backend", "tpu"]) == 2
    err = capsys.readouterr().err
    assert "unknown backend 'tpu'" in err and "torch" in err


def test_registered_backend_is_used(setup):
    """The one interface the export backends implement: evaluate() scores any backend object passed in."""
    import numpy as np

    from train.evaluation import evaluate
    from train.model_dir import read_manifest

    _, data, model = setup

    class Constant:
        name = "constant"

        def __init__(self, model_dir, **kw):
            self.manifest = read_manifest(model_dir)

        def predict(self, dialogues):
            out = []
            for d in dialogues:
                p = np.zeros((len(d), len(self.manifest.labels)), np.float32)
                p[:, 2] = 1.0  # always "neutral"
                out.append(p)
            return out

    r = evaluate(str(model), str(data), "test", backend=Constant(model))  # any backend object, passed in
    assert r["backend"] == "constant"
    assert r["per_class_f1"]["neutral"] > 0 and all(v == 0 for k, v in r["per_class_f1"].items() if k != "neutral")


def test_predictions_file_and_shift_accuracy(setup, tmp_path, capsys):
    """--predictions writes one row per utterance; --json adds shift / no-shift accuracy that agree with the rows."""
    from train.data import load_corpus
    from train.evaluate import main
    from train.metrics import shift_mask

    _, data, model = setup
    out = tmp_path / "pred.jsonl"
    assert main(["--model", str(model), "--data", str(data), "--split", "test", "--json", "--predictions", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    dialogues = load_corpus(data).split("test")
    assert len(rows) == sum(len(d) for d in dialogues)
    assert set(rows[0]) == {"dialogue", "index", "speaker", "label", "prediction", "probs"}
    assert all(r["prediction"] == max(r["probs"], key=r["probs"].get) for r in rows)
    assert all(abs(sum(r["probs"].values()) - 1) < 1e-3 for r in rows)
    shifts = [bool(s) for d in dialogues for s in shift_mask(d.labels, d.speakers)]
    hits = [r["label"] == r["prediction"] for r in rows]
    n_shift = sum(shifts)
    assert report["n_shift"] == n_shift > 0
    assert report["shift_accuracy"] == pytest.approx(100 * sum(h for h, s in zip(hits, shifts) if s) / n_shift)
    rest = [h for h, s in zip(hits, shifts) if not s]
    assert report["no_shift_accuracy"] == pytest.approx(100 * sum(rest) / len(rest))
    assert report["accuracy"] == pytest.approx(100 * sum(hits) / len(hits))


def test_predictions_folder_must_exist(setup, tmp_path, capsys):
    from train.common import run_cli
    from train.evaluate import main

    _, data, model = setup
    missing = tmp_path / "no" / "such" / "pred.jsonl"
    assert run_cli(main, ["--model", str(model), "--data", str(data), "--split", "test", "--predictions", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not exist" in err and str(missing.parent) in err
    assert not missing.parent.exists()


def test_labels_of_another_dataset_are_refused(setup, tmp_path, capsys):
    from tests.synthetic_pickles import write_dialoguernn_meld
    from train.common import run_cli
    from train.evaluate import main

    _, _, model = setup
    meld = write_dialoguernn_meld(tmp_path / "MELD_features_raw.pkl", dims={"text": 16, "audio": 4})
    assert run_cli(main, ["--model", str(model), "--data", str(meld.path), "--split", "test"]) == 2
    err = capsys.readouterr().err
    assert "labels" in err and "meld" in err


# --- shipped models ----------------------------------------------------------------------------

SHIPPED = ROOT / "runtime" / "models"


def test_model_names_resolve_only_through_a_search_path(tmp_path):
    """train knows no shipped folder: a name needs $ARIIGCN_MODEL_PATH (or the runtime's own dir)."""
    code = ("from train.model_dir import resolve_model_dir; from train.common import run_cli; "
            "import sys; sys.exit(run_cli(lambda a: print(resolve_model_dir('iemocap')), []))")
    env = {k: v for k, v in os.environ.items() if k != "ARIIGCN_MODEL_PATH"}
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "ARIIGCN_MODEL_PATH" in res.stderr, res.stderr
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**env, "PYTHONPATH": str(ROOT), "ARIIGCN_MODEL_PATH": str(SHIPPED)})
    assert res.returncode == 0 and Path(res.stdout.strip()) == SHIPPED / "iemocap", res.stderr
    # the runtime passes its shipped models itself
    code = code.replace("from train.model_dir", "import runtime; from train.model_dir")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and Path(res.stdout.strip()).resolve() == (SHIPPED / "iemocap").resolve(), res.stderr


@pytest.mark.parametrize("name,labels,ext,dim", [("iemocap", IEMOCAP_LABELS, "mpnet", 768), ("meld", MELD_LABELS, "minilm-ctx-meld", 384)])
def test_shipped_model_resolves_and_reads_without_torch(name, labels, ext, dim):
    code = (
        "import sys, json\n"
        "from train.model_dir import resolve_model_dir, read_manifest, read_metrics\n"
        f"m = read_manifest({name!r})\n"
        "print(json.dumps({'dir': str(resolve_model_dir(m.name)), 'labels': m.labels, 'causal': m.causal,"
        " 'ext': m.extractors['text'].name, 'dim': m.dims['text'], 'torch': 'torch' in sys.modules,"
        f" 'metrics': read_metrics({name!r}) is not None}}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "ARIIGCN_MODEL_PATH": str(SHIPPED)})
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["labels"] == labels
    assert info["causal"] and info["ext"] == ext and info["dim"] == dim
    assert info["torch"] is False
    assert info["metrics"]
    assert Path(info["dir"]).resolve() == (ROOT / "runtime" / "models" / name).resolve()


def _committable_files(root: Path) -> list[Path]:
    """Files under ``root`` that git would commit (generated, ignored exports excluded)."""
    try:
        res = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", str(root)],
                             cwd=ROOT, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        res = None
    if res is None or res.returncode != 0:  # not a git checkout (e.g. an installed copy): count everything
        return [p for p in root.rglob("*") if p.is_file()]
    return [ROOT / n for n in res.stdout.decode().split("\0") if n and (ROOT / n).is_file()]


def test_shipped_models_fit_the_size_budget():
    files = _committable_files(ROOT / "runtime" / "models")
    assert any(f.name == "model.safetensors" for f in files)
    total = sum(f.stat().st_size for f in files)
    assert 0 < total <= 25 * 1024 * 1024, f"{total / 2**20:.1f} MiB of committed model files"


@pytest.mark.skipif(not (SHARED / "iemocap" / "iemocap_trainval.pkl").is_file(),
                    reason="../shared/data is absent (IEMOCAP data beside the repo)")
def test_shipped_iemocap_model_reproduces_its_card_on_validation(tmp_path, monkeypatch):
    """The shipped weights + the extractor its manifest names give the validation figures it ships with."""
    from train.evaluation import evaluate
    from train.model_dir import read_metrics

    monkeypatch.setenv("ARIIGCN_MODEL_PATH", str(SHIPPED))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    r = evaluate("iemocap", str(SHARED / "iemocap" / "iemocap_trainval.pkl"), "valid", cache_dir=str(tmp_path))
    shipped = read_metrics("iemocap")["selected"]["valid"]
    assert r["n"] == shipped["n"]
    assert r["weighted_f1"] == pytest.approx(shipped["weighted_f1"], abs=0.01)

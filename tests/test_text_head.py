"""model.text_head_weight: the fine-tuned text encoder's own head mixed into the graph's probabilities."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.test_model import C, DIMS, make_cfg, make_dialogue
from tests.train_fixtures import tiny_config, write_config, write_dialoguernn_iemocap
from train.batch import collate
from train.common import InputError
from train.model import SeedEnsemble, build_model
from train.model.rgcn import row_normalised_adjacency as dense_adjacency
from train.model.text_head import TextHeadMix


def _head_file(path, dim, n_classes=C, seed=0):
    g = torch.Generator().manual_seed(seed)
    save_file({"weight": torch.randn(n_classes, dim, generator=g) * 0.3, "bias": torch.randn(n_classes, generator=g)}, str(path))
    return path


def test_mix_is_the_formula_and_leaves_rows_without_text_alone(tmp_path):
    d = 6
    mix = TextHeadMix(d, C, 0.3)
    mix.load_head(_head_file(tmp_path / "head.safetensors", d))
    log_p = torch.log_softmax(torch.randn(5, C), -1)
    text = torch.nn.functional.normalize(torch.randn(5, d), dim=-1)
    text[2] = float("nan")  # absent text rows may hold anything
    present = torch.tensor([True, True, False, True, True])
    out = mix(log_p, text, present)
    head = torch.softmax(text * math.sqrt(d) @ mix.head_weight.T + mix.head_bias, -1)
    want = torch.log(0.7 * log_p.exp() + 0.3 * head)
    assert torch.allclose(out[present], want[present], atol=1e-6)
    assert torch.equal(out[2], log_p[2])
    assert torch.allclose(out.exp().sum(-1), torch.ones(5), atol=1e-6)
    assert not torch.allclose(out[0], log_p[0], atol=1e-3)  # the head moved it


def test_head_file_errors_name_the_file(tmp_path):
    mix = TextHeadMix(6, C, 0.3)
    with pytest.raises(InputError, match="no such file") as e:
        mix.load_head(tmp_path / "missing.safetensors")
    assert "missing.safetensors" in str(e.value)
    with pytest.raises(InputError, match=r"weight \(7, 6\), the model needs \(%d, 6\)" % C):
        mix.load_head(_head_file(tmp_path / "h.safetensors", 6, n_classes=7))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match="cannot read"):
        mix.load_head(bad)


def test_config_checks():
    with pytest.raises(InputError, match=r"text_head_weight must be in \[0, 1\)"):
        make_cfg(["text"], model={"text_head_weight": 1.0})
    with pytest.raises(InputError, match="needs the text modality"):
        make_cfg(["audio"], model={"text_head_weight": 0.3})


def test_ensemble_with_a_text_head_mixes_it_in_both_formulations(tmp_path):
    torch.manual_seed(0)
    cfg = make_cfg(["text", "audio"], model={"ensemble": 2, "text_head_weight": 0.3})
    plain_cfg = make_cfg(["text", "audio"], model={"ensemble": 2})
    model = build_model(cfg, DIMS, C).eval()
    model.text_head.load_head(_head_file(tmp_path / "h.safetensors", DIMS["text"]))
    plain = build_model(plain_cfg, DIMS, C).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("text_head.")})
    assert {k for k in model.state_dict() if k.startswith("text_head.")} == {"text_head.head_weight", "text_head.head_bias"}
    rng = np.random.default_rng(2)
    batch = collate([make_dialogue(rng, 8), make_dialogue(rng, 5, "b")], cfg.data.modalities, cfg.graph)
    p_graph = plain.predict_proba(batch)
    with torch.no_grad():
        head = torch.softmax(batch.features["text"] * math.sqrt(DIMS["text"]) @ model.text_head.head_weight.T
                             + model.text_head.head_bias, -1)
        assert torch.allclose(model.predict_proba(batch), 0.7 * p_graph + 0.3 * head, atol=1e-6)
        adj = dense_adjacency(batch.edge_index, batch.edge_type, batch.num_nodes, model.num_relations)
        assert torch.allclose(model.forward_dense(batch.features, batch.present, adj), model(batch).logits, atol=1e-5)
    # one seed with a text head is an ensemble of one
    one = build_model(make_cfg(["text"], model={"text_head_weight": 0.3}), {"text": DIMS["text"]}, C)
    assert isinstance(one, SeedEnsemble) and len(one.members) == 1


def test_encoder_head_file_of_the_shipped_meld_encoder(monkeypatch):
    from pathlib import Path

    from train.features.text_context import encoder_head_file

    monkeypatch.setenv("ARIIGCN_MODEL_PATH", str(Path(__file__).resolve().parents[1] / "runtime" / "models"))
    path = encoder_head_file("minilm-ctx-meld")
    assert path.name == "head.safetensors" and path.is_file()
    with pytest.raises(InputError, match="has no emotion head"):
        encoder_head_file("minilm")


def test_trained_model_with_a_text_head_reproduces_its_figures_and_exports(tmp_path, monkeypatch):
    """Train (3 seeds + head), reload, evaluate and export: the same figures, ONNX equal to torch."""
    from safetensors.torch import load_file

    from export.__main__ import main as export_main
    from export.manifest import read_export_manifest
    from train.__main__ import main
    from train.common import run_cli
    from train.data import load_corpus
    from train.evaluation import evaluate
    from train.model_dir import load_model

    data = write_dialoguernn_iemocap(tmp_path / "d.pkl", n_train=16, n_test=4, noise=0.8, seed=3)
    base = tiny_config(model={"ensemble": 3}, train={"seeds": [0, 1, 2], "epochs": 3})
    cfg = write_config(tmp_path / "c.yaml", {**base, "model": {**base["model"], "text_head_weight": 0.4}})
    out = tmp_path / "m"
    # precomputed features have no fine-tuned encoder behind them: a clear error before any training
    assert run_cli(main, ["--config", str(cfg), "--data", str(data), "--out", str(out), "--no-progress"]) == 2
    assert not out.exists()
    head = _head_file(tmp_path / "head.safetensors", load_corpus(data).modalities["text"], n_classes=6, seed=1)
    monkeypatch.setattr("train.trainer.text_head_file", lambda cfg: head)  # stands in for an encoder directory's head
    assert main(["--config", str(cfg), "--data", str(data), "--out", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    sel = metrics["selected"]
    assert sel["ensemble"] is True and sel["seeds"] == [0, 1, 2] and sel["text_head_weight"] == 0.4
    model, _, _ = load_model(out)
    assert torch.equal(model.text_head.head_weight, load_file(str(head))["weight"])
    r = evaluate(str(out), str(data), "valid")
    assert r["weighted_f1"] == pytest.approx(sel["valid"]["weighted_f1"], abs=1e-6)
    assert export_main(["--model", str(out), "--data", str(data)]) == 0
    assert read_export_manifest(out / "export").parity["graph"]["onnx"]["max_abs_diff"] <= 1e-4

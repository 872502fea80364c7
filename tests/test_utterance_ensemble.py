"""Weighing the utterance itself (utterance.gate / own_logits / shift_weight / shift_aux) and seed ensembles."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.test_model import C, DIMS, make_cfg, make_dialogue, slice_dialogue
from tests.train_fixtures import tiny_config, write_config, write_dialoguernn_iemocap
from train.batch import collate
from train.common import InputError
from train.graph import window_size
from train.model import ARIIGCN, SeedEnsemble, build_model
from train.model.rgcn import row_normalised_adjacency as dense_adjacency
from train.model.utterance import previous_labelled

OPTIONS = {"gate": {"gate": True}, "own": {"own_logits": True, "own_weight": 0.5}, "both": {"gate": True, "own_logits": True}}


def _model(utterance=None, seed=0, **sections):
    torch.manual_seed(seed)
    cfg = make_cfg(["text", "audio"], utterance=utterance or {}, **sections)
    return build_model(cfg, DIMS, C).eval(), cfg


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_options_add_layers_and_stay_causal_and_windowed(option):
    model, cfg = _model(OPTIONS[option])
    plain, _ = _model()
    assert len(model.state_dict()) > len(plain.state_dict())
    rng = np.random.default_rng(5)
    d = make_dialogue(rng, 20)
    full = model.predict_proba(collate([d], cfg.data.modalities, cfg.graph))
    k = window_size(cfg.graph.past, cfg.model.gcn_layers)
    windows = [slice_dialogue(d, max(0, t + 1 - k), t + 1) for t in range(20)]
    batch = collate(windows, cfg.data.modalities, cfg.graph)
    last = torch.cumsum(batch.lengths, 0) - 1
    assert torch.allclose(model.predict_proba(batch)[last], full, atol=1e-5)
    # the dense (exported) formulation computes the same
    b = collate([d], cfg.data.modalities, cfg.graph)
    adj = dense_adjacency(b.edge_index, b.edge_type, b.num_nodes, model.num_relations)
    with torch.no_grad():
        assert torch.allclose(model.forward_dense(b.features, b.present, adj), model(b).logits, atol=1e-5)


def test_own_logits_are_trained_by_their_own_loss():
    model, cfg = _model(OPTIONS["own"])
    model.train()
    rng = np.random.default_rng(1)
    batch = collate([make_dialogue(rng, 9, "a"), make_dialogue(rng, 7, "b")], cfg.data.modalities, cfg.graph)
    out = model(batch)
    assert out.own_logits is not None and out.own_logits.shape == out.logits.shape
    with_own = model.losses(out, batch)["ce"]
    model.cfg.utterance.own_weight = 0.0
    assert not torch.isclose(with_own, model.losses(out, batch)["ce"])


def test_shift_weight_reweighs_only_shifts():
    model, cfg = _model()
    model.train()
    torch.manual_seed(0)
    d = make_dialogue(np.random.default_rng(2), 12)
    d.speakers = ["A", "B"] * 6
    d.labels = np.array([0, 1, 0, 1, 2, 1, 2, 1, 0, 1, 0, 1])  # A shifts at 4 and 8; B never shifts
    batch = collate([d], cfg.data.modalities, cfg.graph)
    out = model(batch)
    plain = model.losses(out, batch)["ce"]
    model.cfg.utterance.shift_weight = 3.0
    weighted = model.losses(out, batch)["ce"]
    per = torch.nn.functional.cross_entropy(out.logits, batch.labels, reduction="none")
    w = torch.ones(12)
    w[[4, 8]] = 3.0
    assert torch.isclose(weighted, (per * w).sum() / w.sum()) and not torch.isclose(weighted, plain)


def test_previous_labelled_pairs_each_utterance_with_its_speakers_last_labelled_one():
    labels = torch.tensor([0, 1, -1, 2, 0, 3, 4])
    speakers = torch.tensor([0, 1, 0, 0, 1, 0, 0])
    # two dialogues of 5 and 2: the second starts afresh; the unlabelled utterance 2 is skipped
    prev = previous_labelled(labels, speakers, torch.tensor([5, 2]))
    assert prev.tolist() == [-1, -1, -1, 0, 1, -1, 5]


def test_shift_aux_trains_a_head_on_speaker_pairs_and_leaves_inference_alone():
    model, cfg = _model({"shift_aux": 0.5})
    plain, _ = _model()
    model.train()
    d = make_dialogue(np.random.default_rng(2), 12)
    d.speakers = ["A", "B"] * 6
    d.labels = np.array([0, 1, 0, 1, 2, 1, 2, 1, 0, 1, 0, 1])
    batch = collate([d], cfg.data.modalities, cfg.graph)
    out = model(batch)
    losses = model.losses(out, batch)
    assert losses["shift"] > 0
    model.cfg.utterance.shift_aux = 0.0
    assert torch.isclose(losses["total"] - model.losses(out, batch)["total"], 0.5 * losses["shift"])
    model.cfg.utterance.shift_aux = 0.5
    losses["shift"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.utterance.shift_head.parameters())
    # inference is the plain model's: same parameters outside the head give the same logits
    missing = plain.load_state_dict(model.state_dict(), strict=False)
    assert all(k.startswith("utterance.shift_head") for k in missing.unexpected_keys) and not missing.missing_keys
    model.eval(), plain.eval()
    assert torch.allclose(model.predict_proba(batch), plain.predict_proba(batch))
    # one speaker's utterances all alike: no shifts, only "no shift" targets
    d.labels = np.zeros(12, dtype=np.int64)
    same = model.losses(model(collate([d], cfg.data.modalities, cfg.graph)), collate([d], cfg.data.modalities, cfg.graph))
    assert same["shift"] > 0 and torch.isfinite(same["shift"])


def test_bad_utterance_options_are_refused():
    with pytest.raises(InputError, match="own_logits"):
        make_cfg(["text"], utterance={"own_weight": 0.5})
    with pytest.raises(InputError, match="shift_weight"):
        make_cfg(["text"], utterance={"shift_weight": 0.0})
    with pytest.raises(InputError, match="shift_aux"):
        make_cfg(["text"], utterance={"shift_aux": -1.0})
    with pytest.raises(InputError, match="ensemble"):
        make_cfg(["text"], model={"ensemble": 0})


def test_seed_ensemble_averages_member_probabilities():
    torch.manual_seed(0)
    cfg = make_cfg(["text", "audio"], model={"ensemble": 3})
    ens = build_model(cfg, DIMS, C).eval()
    assert isinstance(ens, SeedEnsemble) and len(ens.members) == 3
    assert all(isinstance(m, ARIIGCN) and m.cfg.model.ensemble == 1 for m in ens.members)
    rng = np.random.default_rng(3)
    batch = collate([make_dialogue(rng, 8), make_dialogue(rng, 5, "b")], cfg.data.modalities, cfg.graph)
    mean = torch.stack([m.predict_proba(batch) for m in ens.members]).mean(0)
    assert torch.allclose(ens.predict_proba(batch), mean, atol=1e-6)
    assert not torch.allclose(ens.members[0].predict_proba(batch), mean, atol=1e-3)  # members differ
    adj = dense_adjacency(batch.edge_index, batch.edge_type, batch.num_nodes, ens.num_relations)
    with torch.no_grad():
        assert torch.allclose(torch.softmax(ens.forward_dense(batch.features, batch.present, adj), -1), mean, atol=1e-6)


def test_trained_ensemble_directory_reproduces_its_validation_figures(tmp_path):
    from train.__main__ import main
    from train.evaluation import evaluate
    from train.model_dir import load_model

    data = write_dialoguernn_iemocap(tmp_path / "d.pkl", n_train=16, n_test=4, noise=0.8, seed=3)
    cfg = write_config(tmp_path / "c.yaml", tiny_config(model={"ensemble": 3}, train={"seeds": [0, 1, 2], "epochs": 3},
                                                        utterance={"gate": True}))
    out = tmp_path / "m"
    assert main(["--config", str(cfg), "--data", str(data), "--out", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["selected"]["ensemble"] is True and metrics["selected"]["seeds"] == [0, 1, 2]
    model, _, _ = load_model(out)
    assert isinstance(model, SeedEnsemble)
    r = evaluate(str(out), str(data), "valid")
    assert r["weighted_f1"] == pytest.approx(metrics["selected"]["valid"]["weighted_f1"], abs=1e-6)
    assert r["shift_accuracy"] == pytest.approx(metrics["selected"]["valid"]["shift_accuracy"], abs=1e-6)


def test_ensemble_needs_as_many_seeds(tmp_path, capsys):
    from train.__main__ import main
    from train.common import run_cli

    data = write_dialoguernn_iemocap(tmp_path / "d.pkl", n_train=8, n_test=2)
    cfg = write_config(tmp_path / "c.yaml", tiny_config(model={"ensemble": 3}, train={"seeds": [0, 1]}))
    assert run_cli(main, ["--config", str(cfg), "--data", str(data), "--out", str(tmp_path / "m"), "--no-progress"]) == 2
    assert "model.ensemble is 3" in capsys.readouterr().err


def test_exported_ensemble_with_utterance_options_matches_torch(tmp_path):
    """The ONNX graph of a 3-seed ensemble with the gate and the own head equals torch; INT8 stays close."""
    from export.__main__ import main as export_main
    from export.manifest import read_export_manifest
    from train.__main__ import main

    data = write_dialoguernn_iemocap(tmp_path / "d.pkl", n_train=16, n_test=4, noise=0.8, seed=3)
    cfg = write_config(tmp_path / "c.yaml", tiny_config(model={"ensemble": 3}, train={"seeds": [0, 1, 2], "epochs": 3},
                                                        utterance={"gate": True, "own_logits": True, "own_weight": 0.5}))
    out = tmp_path / "m"
    assert main(["--config", str(cfg), "--data", str(data), "--out", str(out), "--no-progress"]) == 0
    assert export_main(["--model", str(out), "--int8", "--data", str(data)]) == 0
    g = read_export_manifest(out / "export").parity["graph"]
    assert g["onnx"]["max_abs_diff"] <= 1e-4
    assert g["onnx-int8"]["label_agreement"] >= 90.0

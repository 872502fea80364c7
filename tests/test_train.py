"""Training: `python -m train` on a tiny synthetic feature pickle, model selection on validation."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.train_fixtures import tiny_config, write_config, write_dialoguernn_iemocap
from train.data.corpus import IEMOCAP_LABELS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def pickle_path(tmp_path_factory):
    # Low noise: the prototype of each class is easy to learn from its own features.
    return write_dialoguernn_iemocap(tmp_path_factory.mktemp("data") / "IEMOCAP_features_raw.pkl",
                                     n_train=30, n_test=6, noise=0.6, seed=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, pickle_path):
    """One CLI run with two seeds; shared by the tests that read its outputs."""
    from train.__main__ import main

    tmp = tmp_path_factory.mktemp("run")
    cfg = write_config(tmp / "cfg.yaml", tiny_config(train={"epochs": 12, "patience": 12}))
    out = tmp / "model"
    assert main(["--config", str(cfg), "--data", str(pickle_path), "--out", str(out),
                 "--seeds", "0", "1", "--no-progress"]) == 0
    return out


def test_outputs_written(trained):
    for name in ("model.safetensors", "config.yaml", "manifest.json", "metrics.json", "confusion.png", "curves.png"):
        assert (trained / name).is_file(), name
    assert (trained / "confusion.png").read_bytes()[:8] == PNG_MAGIC
    assert (trained / "curves.png").read_bytes()[:8] == PNG_MAGIC
    assert not [p.name for p in trained.iterdir() if ".tmp" in p.name]  # no temp files left behind


def test_manifest_names_labels_dims_and_extractors(trained):
    from train.model_dir import read_manifest

    m = read_manifest(trained)
    assert m.labels == IEMOCAP_LABELS
    assert m.dims == {"text": 16}
    assert m.extractors["text"].name == "precomputed"  # features came with the pickle
    assert m.extractors["text"].dim == 16
    assert m.causal and m.past == 2


def test_metrics_per_seed_aggregate_and_selection(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    seeds = metrics["seeds"]
    assert [s["seed"] for s in seeds] == [0, 1]
    wf1 = [s["valid"]["weighted_f1"] for s in seeds]
    agg = metrics["valid"]
    assert agg["weighted_f1"]["mean"] == pytest.approx(np.mean(wf1))
    assert agg["weighted_f1"]["std"] == pytest.approx(np.std(wf1, ddof=1))
    assert set(agg["per_class_f1"]) == set(IEMOCAP_LABELS)
    assert metrics["selected"]["seed"] == seeds[int(np.argmax(wf1))]["seed"]
    # the selected epoch is the best epoch of the seed's validation curve
    sel = seeds[int(np.argmax(wf1))]
    best = max(sel["history"], key=lambda h: h["valid_wf1"])
    assert sel["best_epoch"] == best["epoch"]
    assert "test" not in metrics["splits"]
    assert metrics["splits"]["valid"]["labelled"] == sel["valid"]["n"]


def test_model_learns_the_synthetic_labels(trained):
    """Chance is about 17-20% wF1 with 6 classes; the classes are separable, so far more is expected."""
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["selected"]["valid"]["weighted_f1"] > 60.0


def test_reloaded_model_reproduces_validation_figures(trained, pickle_path):
    from train.evaluation import evaluate

    metrics = json.loads((trained / "metrics.json").read_text())
    report = evaluate(str(trained), str(pickle_path), "valid")
    assert report["weighted_f1"] == pytest.approx(metrics["selected"]["valid"]["weighted_f1"], abs=1e-6)
    assert report["n"] == metrics["selected"]["valid"]["n"]


def test_selection_only_ever_scores_validation(monkeypatch, pickle_path, tmp_path):
    import train.trainer as trainer
    from train.config import config_from_dict

    seen = []
    real = trainer.evaluate_model

    def spy(model, dialogues, *a, **kw):
        seen.extend(d.split for d in dialogues)
        return real(model, dialogues, *a, **kw)

    monkeypatch.setattr(trainer, "evaluate_model", spy)
    cfg = config_from_dict(tiny_config(train={"epochs": 2}))
    data = trainer.prepare_data(cfg, str(pickle_path))
    assert data.corpus.split("test")  # the file has a test split ...
    trainer.train_seeds(cfg, data, [0], progress=False)
    assert seen and set(seen) == {"valid"}  # ... which training never scores


def test_early_stopping_stops_when_validation_stalls(pickle_path):
    """With lr 0 the weights never change, validation wF1 is flat and patience 2 stops at epoch 3."""
    from train.config import config_from_dict
    from train.trainer import prepare_data, train_seed

    cfg = config_from_dict(tiny_config(train={"epochs": 20, "patience": 2, "lr": 0.0}))
    run = train_seed(cfg, prepare_data(cfg, str(pickle_path)), seed=0, progress=False)
    assert run.stopped_early
    assert run.epochs_run == 3
    assert run.best_epoch == 1
    assert len(run.history) == 3



def test_select_from_never_keeps_a_warm_up_epoch(pickle_path):
    """lr 0 keeps validation wF1 flat: without a warm-up epoch 1 is kept; with select_from 4 the
    first 3 epochs are never selected and patience 2 counts from epoch 4 (stop at epoch 6)."""
    from train.config import config_from_dict
    from train.trainer import prepare_data, train_seed

    cfg = config_from_dict(tiny_config(train={"epochs": 20, "patience": 2, "lr": 0.0, "select_from": 4}))
    run = train_seed(cfg, prepare_data(cfg, str(pickle_path)), seed=0, progress=False)
    assert run.best_epoch == 4
    assert run.epochs_run == 6


def test_modality_dropout_drops_one_present_modality_never_the_last():
    from train.batch import drop_modalities
    from train.data.corpus import Dialogue
    from train.graph import present_rows

    rng = np.random.default_rng(0)
    n = 2000
    feats = {m: rng.normal(size=(n, 3)).astype(np.float32) for m in ("text", "audio", "visual")}
    feats["visual"][:500] = np.nan  # these utterances have two modalities
    feats["audio"][:100] = np.nan  # these have text only
    d = Dialogue(id="d", split="train", speakers=["A"] * n, labels=np.zeros(n, np.int64), features=feats)
    (out,) = drop_modalities([d], ["text", "audio", "visual"], 0.3, np.random.default_rng(1))
    before = np.stack([present_rows(feats[m]) for m in ("text", "audio", "visual")], 1)
    after = np.stack([present_rows(out.features[m]) for m in ("text", "audio", "visual")], 1)
    lost = before.sum(1) - after.sum(1)
    assert set(np.unique(lost)) == {0, 1}, "at most one modality is lost"
    assert not (after & ~before).any(), "nothing comes back"
    assert after[:100].sum(1).min() == 1, "an utterance's last modality is kept"
    assert 0.25 < lost[100:].mean() < 0.35, f"about 30% lose one, got {lost[100:].mean():.2f}"
    assert np.bincount(np.argmax((before & ~after)[500:], 1)[lost[500:] == 1], minlength=3).min() > 100, \
        "every modality is dropped"
    assert np.array_equal(out.features["text"][after[:, 0]], feats["text"][after[:, 0]]), "kept rows unchanged"
    assert drop_modalities([d], ["text", "audio", "visual"], 0.0, rng)[0] is d


def test_context_dropout_leaves_some_nodes_alone_and_the_rest_untouched():
    """Each dropped node loses every incoming edge, and only those: edges into the other nodes,
    and every edge out of a dropped node, stay."""
    from train.batch import collate, drop_context
    from train.config import GraphConfig
    from train.data.corpus import Dialogue

    rng = np.random.default_rng(0)
    n = 400
    d = Dialogue(id="d", split="train", speakers=["A", "B"] * (n // 2), labels=np.zeros(n, np.int64),
                 features={"text": rng.normal(size=(n, 3)).astype(np.float32)})
    batch = collate([d], ["text"], GraphConfig(past=4, future=0))
    out = drop_context(batch, 0.3, np.random.default_rng(1))
    edges = {tuple(e) for e in batch.edge_index.T.tolist()}
    kept = {tuple(e) for e in out.edge_index.T.tolist()}
    assert kept <= edges and out.edge_type.shape[0] == out.edge_index.shape[1]
    targets = batch.edge_index[1].unique().tolist()
    alone = set(targets) - set(out.edge_index[1].unique().tolist())
    assert 0.25 < len(alone) / len(targets) < 0.35, "about 30% of the nodes with context lose it"
    assert kept == {e for e in edges if e[1] not in alone}, "exactly the edges into dropped nodes go"
    types = dict(zip(map(tuple, batch.edge_index.T.tolist()), batch.edge_type.tolist()))
    assert all(types[tuple(e)] == t for e, t in zip(out.edge_index.T.tolist(), out.edge_type.tolist()))
    assert drop_context(batch, 0.0, rng) is batch


def test_seeds_are_reproducible(pickle_path):
    from train.config import config_from_dict
    from train.trainer import prepare_data, train_seed

    cfg = config_from_dict(tiny_config(train={"epochs": 3}))
    data = prepare_data(cfg, str(pickle_path))
    a = train_seed(cfg, data, seed=3, progress=False)
    b = train_seed(cfg, data, seed=3, progress=False)
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    for k in a.state:
        assert np.array_equal(a.state[k].numpy(), b.state[k].numpy()), k


def test_class_weights_inverse_frequency():
    from train.data.corpus import Dialogue
    from train.trainer import class_weights

    dlg = Dialogue("d", "train", ["A"] * 5, np.array([0, 0, 0, 1, -1]))
    w = class_weights([dlg], 3)
    # counts 3, 1, 0 -> inverse frequency 1/3 : 1, scaled to mean 1 over present classes; absent -> 0
    assert w.tolist() == pytest.approx([0.5, 1.5, 0.0])


def test_class_weights_reach_the_objective(monkeypatch, pickle_path):
    import train.objective as objective_mod
    from train.config import config_from_dict
    from train.trainer import prepare_data, train_seed

    got = {}
    real = objective_mod.Objective

    def spy(model, cfg, class_weights=None, **kw):
        got["w"] = class_weights
        return real(model, cfg, class_weights=class_weights, **kw)

    monkeypatch.setattr(objective_mod, "Objective", spy)
    cfg = config_from_dict(tiny_config(train={"epochs": 1, "class_weights": True}))
    train_seed(cfg, prepare_data(cfg, str(pickle_path)), seed=0, progress=False)
    assert got["w"] is not None and tuple(got["w"].shape) == (6,)
    assert float(got["w"].mean()) == pytest.approx(1.0, rel=1e-5)


def test_multimodal_config_trains(pickle_path, tmp_path):
    """All three modalities of the pickle, bidirectional graph: the paper's setting runs end to end."""
    from train.__main__ import main
    from train.model_dir import read_manifest

    cfg = write_config(tmp_path / "mm.yaml", tiny_config(modalities=("text", "audio", "visual"),
                                                         graph={"past": 2, "future": 2}, train={"epochs": 2}))
    out = tmp_path / "mm"
    assert main(["--config", str(cfg), "--data", str(pickle_path), "--out", str(out), "--no-progress"]) == 0
    m = read_manifest(out)
    assert m.dims == {"text": 16, "audio": 12, "visual": 8}
    assert not m.causal


def test_set_override_changes_config(pickle_path, tmp_path):
    from train.__main__ import main
    from train.model_dir import read_config

    cfg = write_config(tmp_path / "c.yaml", tiny_config(train={"epochs": 1}))
    out = tmp_path / "o"
    assert main(["--config", str(cfg), "--data", str(pickle_path), "--out", str(out), "--no-progress",
                 "--set", "model.hidden=8", "--set", "graph.past=1"]) == 0
    saved = read_config(out)
    assert saved.model.hidden == 8 and saved.graph.past == 1


def test_metrics_scores_ignore_unlabelled():
    from train.metrics import score

    s = score(np.array([0, 1, 1, -1]), np.array([0, 1, 0, 1]), ["a", "b"])
    assert s.n == 3
    assert s.accuracy == pytest.approx(200 / 3)
    assert s.per_class_f1["a"] == pytest.approx(100 * 2 / 3)  # P=1/2, R=1
    assert s.per_class_f1["b"] == pytest.approx(100 * 2 / 3)  # P=1, R=1/2
    assert s.confusion == [[1, 0], [1, 1]]


def test_ablation_table_on_synthetic(pickle_path):
    from train.ablation import markdown_table, run_ablation
    from train.config import config_from_dict
    from train.trainer import prepare_data

    cfg = config_from_dict(tiny_config(train={"epochs": 2}))
    data = prepare_data(cfg, str(pickle_path))
    rows = run_ablation(cfg, data, [0], ["full", "no_adversarial", "no_graph", "logreg"], progress=False)
    table = markdown_table(rows, "t")
    assert table.count("\n| ") == 5  # header + 4 rows
    assert "inert" in table  # one modality: the adversarial row says so
    logreg = next(r for r in rows if r["variant"] == "logreg")
    assert logreg["weighted_f1"]["mean"] > 60.0  # separable features: the baseline learns too


def test_ablate_json_multimodal(pickle_path, tmp_path, capsys):
    """``python -m train.ablate --json``: one JSON object with every variant's figures (mean ± std over
    seeds), the modality probe and the scores with each modality missing at test time."""
    import json

    from train.ablate import main

    cfg = write_config(tmp_path / "mm.yaml", tiny_config(modalities=("text", "audio", "visual"), train={"epochs": 2}))
    assert main(["--config", str(cfg), "--data", str(pickle_path), "--seeds", "0", "1", "--json", "--no-progress",
                 "--variants", "full", "no_adversarial", "no_intra", "no_inter", "no_graph", "logreg"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["variants"]) == {"full", "no_adversarial", "no_intra", "no_inter", "no_graph", "logreg"}
    logreg = out["variants"].pop("logreg")  # context-free baseline: needs every modality, so no missing rows
    assert 0 <= logreg["weighted_f1"]["mean"] <= 100 and "missing" not in logreg
    for v in out["variants"].values():
        for key in ("weighted_f1", "accuracy", "modality_probe_accuracy"):
            assert set(v[key]) == {"mean", "std"} and 0 <= v[key]["mean"] <= 100
        assert set(v["missing"]) == {"text", "audio", "visual"}
        assert all(set(m["weighted_f1"]) == {"mean", "std"} for m in v["missing"].values())
        assert len(v["per_seed_wf1"]) == 2

"""Fusion and the synthetic multimodal benchmark.

What this file checks, and what it does not:

* **Fusion works** (:func:`test_three_modalities_beat_every_single_one`): on data where each
  modality alone is weak, a three-modality AR-IIGCN clearly beats every single-modality one. This
  is the projections + graph + pooled classifier combining modalities. It does *not* check the
  paper's adversarial or contrastive parts: the same training reaches the same accuracy with them
  switched off. ``tests/test_mechanisms.py`` checks those, each against the model without it.
* **The benchmark generator keeps its promise** (:mod:`train.data.synthetic`, ``separable``
  preset): each modality alone is weak for a context-free linear classifier, all three together
  determine the label, the widths are the community files' (1582 / 342 / 100), and test
  utterances lose a modality at the stated rate.

The fusion data: four classes are two bits ``y = bit0 + 2 * bit1``. Text carries bit0, audio
carries bit1, visual carries ``bit0 xor bit1``, each as a noisy prototype in its own feature space,
and labels are independent across utterances (context cannot help). Any single modality knows
one bit, so it caps near 50% accuracy; any two determine the class, and three add redundancy
against the noise.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from train.batch import collate
from train.config import config_from_dict
from train.data.corpus import Dialogue
from train.model import ARIIGCN
from train.objective import Objective

DIMS = {"text": 8, "audio": 6, "visual": 10}
MODALITIES = ("text", "audio", "visual")


def synthetic_dialogues(n_dialogues: int, seed: int, noise: float = 0.6, min_len: int = 6,
                        max_len: int = 12) -> list[Dialogue]:
    """Dialogues whose label is split across modalities (see the module docstring)."""
    proto_rng = np.random.default_rng(1234)  # the same prototypes for every split
    protos = {m: proto_rng.normal(size=(2, d)).astype(np.float32) for m, d in DIMS.items()}
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n_dialogues):
        n = int(rng.integers(min_len, max_len + 1))
        y = rng.integers(0, 4, n)
        bits = {"text": y & 1, "audio": y >> 1, "visual": (y & 1) ^ (y >> 1)}
        feats = {m: (protos[m][bits[m]] + noise * rng.normal(size=(n, DIMS[m]))).astype(np.float32) for m in DIMS}
        out.append(Dialogue(id=f"s{seed}-{k}", split="train", speakers=[str(s) for s in rng.integers(0, 2, n)],
                            labels=y.astype(np.int64), features=feats))
    return out


def synthetic_config(modalities, **sections):
    raw = {"data": {"modalities": list(modalities), "extractors": {}},
           "graph": {"past": 2, "future": 0},
           "model": {"hidden": 32, "classifier_hidden": 32, "gcn_layers": 1, "dropout": 0.1},
           "train": {"lr": 5e-3, "weight_decay": 0.0}}
    for k, v in sections.items():
        raw.setdefault(k, {}).update(v)
    return config_from_dict(raw)


def train_and_score(cfg, train, test, epochs: int = 15, batch_dialogues: int = 8, seed: int = 0) -> float:
    """Train briefly with Objective, return held-out accuracy (%)."""
    torch.manual_seed(seed)
    model = ARIIGCN(cfg, DIMS, 4)
    objective = Objective(model, cfg)
    rng = np.random.default_rng(seed)
    batches = None
    for _ in range(epochs):
        order = rng.permutation(len(train))
        batches = [collate([train[j] for j in order[i:i + batch_dialogues]], cfg.data.modalities, cfg.graph)
                   for i in range(0, len(order), batch_dialogues)]
        for b in batches:
            objective.step(b)
    model.eval()
    b = collate(test, cfg.data.modalities, cfg.graph)
    pred = model.predict_proba(b).argmax(1)
    return float((pred == b.labels).float().mean() * 100)


def test_three_modalities_beat_every_single_one():
    torch.set_num_threads(1)
    train, test = synthetic_dialogues(48, seed=0), synthetic_dialogues(24, seed=1)
    single = {m: train_and_score(synthetic_config([m]), train, test) for m in MODALITIES}
    fused = train_and_score(synthetic_config(MODALITIES), train, test)
    print(f"held-out accuracy: single {single}, fused {fused:.1f}")
    for m, acc in single.items():
        assert acc < 62, f"{m} alone should cap near 50%, got {acc:.1f}"
        assert fused > acc + 25, f"fusion {fused:.1f} does not clearly beat {m} alone ({acc:.1f})"
    assert fused > 85


def test_separable_benchmark_each_modality_weak_alone_all_three_determine_the_label(tmp_path):
    from train.ablation import context_free_logreg
    from train.data import load_corpus
    from train.data.synthetic import DIMS, preset, write_benchmark
    from train.graph import present_rows

    spec = preset("separable", seed=5, n_train=40, n_test=10, min_len=15, max_len=30, missing=0.3)
    corpus = load_corpus(write_benchmark(tmp_path / "IEMOCAP_features.pkl", spec))
    assert corpus.modalities == DIMS == {"text": 100, "audio": 1582, "visual": 342}
    train, valid = corpus.split("train"), corpus.split("valid")
    acc = {m: context_free_logreg(train, valid, [m], corpus.labels, standardise=True, c=0.05).accuracy
           for m in ("text", "audio", "visual")}
    fused = context_free_logreg(train, valid, ["text", "audio", "visual"], corpus.labels, standardise=True, c=0.05)
    print(f"context-free valid accuracy: {acc}, fused {fused.accuracy:.1f}")
    for m, a in acc.items():
        assert a < 60.0, f"{m} alone should be weak (one coarse cue of six labels), got {a:.1f}%"
    assert fused.accuracy > 90.0, f"all three should determine the label, got {fused.accuracy:.1f}%"
    test = corpus.split("test")
    absent = np.concatenate([np.stack([~present_rows(d.features[m]) for m in DIMS], 1) for d in test])  # (n, 3)
    assert absent.sum(1).max() == 1, "an utterance loses at most one modality"
    assert 0.2 < absent.any(1).mean() < 0.4, f"about 30% of test utterances should lose one, got {absent.any(1).mean():.2f}"
    assert not any((~present_rows(d.features[m])).any() for d in train for m in DIMS), "training keeps every modality"


@pytest.mark.parametrize("argv, message", [
    (["--missing", "1.5"], "--missing must be in [0, 1], got 1.5"),
    (["--scale-spread", "-1"], "--scale-spread must be >= 0, got -1.0"),
    (["--n-train", "3"], "--n-train must be >= 10, got 3"),
])
def test_make_synthetic_refuses_bad_settings_and_writes_nothing(tmp_path, argv, message):
    from train.common import InputError
    from train.make_synthetic import main

    out = tmp_path / "IEMOCAP_features.pkl"
    with pytest.raises(InputError, match=re.escape(message)):
        main(["--out", str(out), "--preset", "separable", *argv])
    assert not out.exists()

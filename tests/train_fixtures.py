"""Tiny synthetic corpora for the training tests, written in a community feature-pickle layout.

DialogueRNN's IEMOCAP layout (``videoIDs, videoSpeakers, videoLabels, videoText, videoAudio,
videoVisual, videoSentence, trainVid, testVid``) already carries per-utterance features, so
training tests need no feature extraction. Each utterance's features are a class prototype plus
noise, so a model can learn the labels and a test can tell learning from chance.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import yaml

N_CLASSES = 6  # IEMOCAP's label set


def write_dialoguernn_iemocap(path: Path, *, n_train: int = 20, n_test: int = 6, min_len: int = 5,
                              max_len: int = 10, dims: dict[str, int] | None = None, noise: float = 1.0,
                              seed: int = 0) -> Path:
    """Write a DialogueRNN-layout IEMOCAP pickle; the loader makes validation from 10% of train."""
    dims = dims or {"text": 16, "audio": 12, "visual": 8}
    rng = np.random.default_rng(seed)
    protos = {m: rng.normal(size=(N_CLASSES, d)).astype(np.float32) for m, d in dims.items()}
    ids, speakers, labels, sentences = {}, {}, {}, {}
    feats = {m: {} for m in ("text", "audio", "visual")}
    train_ids, test_ids = [], []
    for k in range(n_train + n_test):
        vid = f"Ses0{1 + k % 4}{'FM'[k % 2]}_synth{k:03d}"
        n = int(rng.integers(min_len, max_len + 1))
        y = rng.integers(0, N_CLASSES, size=n)
        ids[vid] = [f"{vid}_{i:03d}" for i in range(n)]
        speakers[vid] = ["M" if rng.random() < 0.5 else "F" for _ in range(n)]
        labels[vid] = [int(v) for v in y]
        sentences[vid] = [f"utterance {i} of {vid}" for i in range(n)]
        for m in ("text", "audio", "visual"):
            d = dims.get(m, 4)
            base = protos[m][y] if m in protos else np.zeros((n, d), np.float32)
            feats[m][vid] = [row for row in (base + noise * rng.normal(size=(n, d))).astype(np.float32)]
        (train_ids if k < n_train else test_ids).append(vid)
    obj = [ids, speakers, labels, feats["text"], feats["audio"], feats["visual"], sentences, train_ids, test_ids]
    path = Path(path)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)
    return path


def tiny_config(modalities=("text",), **sections) -> dict:
    """A small, fast config dict with no feature extractors (features come with the pickle)."""
    cfg = {
        "name": "synthetic",
        "data": {"dataset": "iemocap", "modalities": list(modalities), "extractors": {}},
        "graph": {"past": 2, "future": 0},
        "model": {"hidden": 16, "classifier_hidden": 16, "gcn_layers": 1, "dropout": 0.0},
        "train": {"epochs": 4, "patience": 3, "batch_dialogues": 4, "lr": 0.01, "seeds": [0]},
    }
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    Path(path).write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return Path(path)

"""Must show: fusion works. Each modality alone is weak, all three together are strong.

Four classes are two bits ``y = bit0 + 2 * bit1``. Text carries bit0, audio carries bit1,
visual carries ``bit0 xor bit1``, each as a noisy prototype in its own feature space, and
labels are independent across utterances (context cannot help). Any single modality knows
one bit, so it caps near 50% accuracy; any two determine the class, and three add redundancy
against the noise. A three-modality AR-IIGCN trained with :class:`train.objective.Objective`
must beat every single-modality model by a wide margin on held-out dialogues.
"""
from __future__ import annotations

import numpy as np
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

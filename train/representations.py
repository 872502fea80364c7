r"""What a trained AR-IIGCN's representations show: a modality probe and emotion similarity gaps.

These measure the paper's parts directly, on held-out utterances:

* **Modality probe** (the adversarial part). The representations the graph receives are the
  generator outputs :math:`g^m_u` of present nodes. A *fresh* linear classifier of the modality
  (standardised features, multinomial logistic regression) is fitted on training utterances and
  scored on held-out ones. If the adversarial part aligns the modalities' spaces, the probe's
  accuracy falls towards chance (1/M); without it the separate projections keep the spaces
  apart and the probe is near 100%.
* **Emotion cosine gaps** (the contrastive parts), on the node states after the graph (what the
  contrastive losses act on), L2-normalised: mean cosine of same-emotion pairs minus that of
  different-emotion pairs, over pairs of *different* modalities (``inter``, the inter-modal loss
  pulls one emotion together across modalities) and over pairs *within* one modality
  (``intra``, the intra-modal loss pushes emotions apart inside each modality).

    reps = collect(model, dialogues, cfg)                 # model in eval mode, no gradients
    probe_accuracy(collect(model, train, cfg), reps)      # percent
    emotion_cosine_gaps(reps)                             # {"inter": float, "intra": float}
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from train.data.corpus import Dialogue


@dataclass
class Representations:
    """Per present node (utterance u, modality m) of some dialogues, K nodes in all.

    generated: (K, H) generator output (the graph's input); states: (K, H) node state after the
    graph; modality: (K,) int64 index into ``modalities``; emotion: (K,) int64 (-1 unlabelled);
    utterance: (K,) int64 running utterance index (nodes of one utterance share it).
    """

    generated: np.ndarray
    states: np.ndarray
    modality: np.ndarray
    emotion: np.ndarray
    utterance: np.ndarray
    modalities: list[str]


def collect(model, dialogues: Sequence[Dialogue], cfg, batch_dialogues: int = 32,
            device: str = "cpu") -> Representations:
    """Run ``model`` (an :class:`train.model.ARIIGCN`) over ``dialogues`` and keep every present node."""
    import torch

    from train.batch import collate

    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("generated", "states", "modality", "emotion", "utterance")}
    was_training = model.training
    model.eval()
    offset = 0
    try:
        with torch.no_grad():
            for i in range(0, len(dialogues), batch_dialogues):
                batch = collate(list(dialogues[i:i + batch_dialogues]), cfg.data.modalities, cfg.graph).to(device)
                out = model(batch, adversarial=False)
                present = batch.present.t().cpu().numpy()  # (M, N)
                n_mod, n = present.shape
                m_idx, u_idx = np.nonzero(present)
                parts["generated"].append(out.generated.cpu().numpy()[m_idx, u_idx])
                parts["states"].append(out.states.cpu().numpy()[m_idx, u_idx])
                parts["modality"].append(m_idx.astype(np.int64))
                parts["emotion"].append(batch.labels.cpu().numpy()[u_idx])
                parts["utterance"].append((u_idx + offset).astype(np.int64))
                offset += n
    finally:
        model.train(was_training)
    return Representations(**{k: np.concatenate(v) for k, v in parts.items()}, modalities=list(cfg.data.modalities))


def _subsample(n: int, limit: int, seed: int) -> np.ndarray:
    idx = np.arange(n)
    if n > limit:
        idx = np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))
    return idx


def probe_accuracy(train: Representations, held_out: Representations, max_fit: int = 6000, seed: int = 0) -> float:
    """Percent of held-out nodes whose modality a fresh linear probe, fitted on ``train``, names right.

    The probe is ``StandardScaler -> LogisticRegression`` (lbfgs, C=1) on the generator outputs;
    at most ``max_fit`` training nodes (a random subset, fixed by ``seed``) are used to fit it.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(set(train.modality.tolist())) < 2:
        raise ValueError("the modality probe needs nodes of at least two modalities")
    idx = _subsample(len(train.modality), max_fit, seed)
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    probe.fit(train.generated[idx], train.modality[idx])
    return 100.0 * float((probe.predict(held_out.generated) == held_out.modality).mean())


def emotion_cosine_gaps(reps: Representations, max_nodes: int = 4000, seed: int = 0) -> dict[str, float]:
    """``{"inter": gap, "intra": gap}``: same-emotion minus different-emotion mean cosine of the
    node states, over pairs of different modalities (inter) or of one modality (intra).

    Labelled nodes only; at most ``max_nodes`` (a random subset fixed by ``seed``). A pair of
    nodes of the same utterance is left out (it is the same emotion by construction).
    """
    keep = np.nonzero(reps.emotion >= 0)[0]
    keep = keep[_subsample(len(keep), max_nodes, seed)]
    z = reps.states[keep].astype(np.float64)
    z /= np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    cos = z @ z.T
    y, m, u = reps.emotion[keep], reps.modality[keep], reps.utterance[keep]
    same_emotion = y[:, None] == y[None, :]
    same_mod = m[:, None] == m[None, :]
    other_utt = u[:, None] != u[None, :]
    out = {}
    for name, pairs in (("inter", ~same_mod & other_utt), ("intra", same_mod & other_utt)):
        pos, neg = pairs & same_emotion, pairs & ~same_emotion
        out[name] = float(cos[pos].mean() - cos[neg].mean()) if pos.any() and neg.any() else float("nan")
    return out

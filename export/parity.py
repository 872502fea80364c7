"""Parity of exported graph models with the torch model on the same dialogues.

Figures (printed by ``python -m export`` and ``python -m export.bench``, stored in the
manifest): FP32 max |Δ probability|, and for reduced precisions the label agreement with torch
(% of utterances with the same argmax) and the weighted-F1 change on the labelled utterances.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from train.data.corpus import Dialogue


def compare(reference: Sequence[np.ndarray], other: Sequence[np.ndarray], dialogues: Sequence[Dialogue], labels: Sequence[str]) -> dict[str, float]:
    """``reference`` and ``other``: per dialogue (n_i, C) probabilities of the same utterances."""
    from train.metrics import score

    ref, oth = np.concatenate(reference), np.concatenate(other)
    y = np.concatenate([np.asarray(d.labels) for d in dialogues])
    ref_pred, oth_pred = ref.argmax(1), oth.argmax(1)
    ref_f1 = score(y, ref_pred, labels).weighted_f1
    oth_f1 = score(y, oth_pred, labels).weighted_f1
    return {
        "utterances": int(ref.shape[0]),
        "max_abs_diff": float(np.abs(ref - oth).max()),
        "label_agreement": float(100.0 * (ref_pred == oth_pred).mean()),
        "weighted_f1_torch": float(ref_f1),
        "weighted_f1": float(oth_f1),
        "weighted_f1_drop": float(ref_f1 - oth_f1),
    }


def graph_parity(model, cfg, dialogues: Sequence[Dialogue], backends: Mapping[str, object], labels: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per backend name, :func:`compare` of its ``predict`` with the torch model's."""
    from train.backends import predict_dialogues

    reference = predict_dialogues(model, dialogues, cfg, "cpu")
    return {name: compare(reference, be.predict(dialogues), dialogues, labels) for name, be in backends.items()}


def format_parity(parity: Mapping[str, Mapping[str, float]], split: str = "valid") -> str:
    lines = [f"parity with torch on {split} ({next(iter(parity.values()))['utterances'] if parity else 0} utterances):"]
    for name, p in parity.items():
        lines.append(
            f"  {name:<10} max |Δ prob| {p['max_abs_diff']:.2e}   label agreement {p['label_agreement']:6.2f}%   "
            f"wF1 {p['weighted_f1']:.2f} (torch {p['weighted_f1_torch']:.2f}, drop {p['weighted_f1_drop']:+.2f})"
        )
    return "\n".join(lines)

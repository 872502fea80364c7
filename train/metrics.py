"""Classification figures for emotion recognition: accuracy, weighted F1, per-class F1.

All figures are percentages (0-100), as the field reports them. Utterances with label -1
(unlabelled) are left out before anything is counted.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score


@dataclass
class Scores:
    """Figures for one set of predictions.

    accuracy, weighted_f1, macro_f1: percent. per_class_f1: label name -> percent.
    n: number of labelled utterances scored. confusion: (C, C) counts, rows = true label.
    shift_accuracy / no_shift_accuracy: percent accuracy on emotion shifts (gold label differs
    from the same speaker's previous labelled utterance's, see :func:`shift_mask`) and on every
    other labelled utterance; n_shift: how many shifts. None when the caller gave no shift mask.
    """

    accuracy: float
    weighted_f1: float
    macro_f1: float
    per_class_f1: dict[str, float]
    n: int
    confusion: list[list[int]] = field(default_factory=list)
    shift_accuracy: float | None = None
    no_shift_accuracy: float | None = None
    n_shift: int | None = None

    def to_dict(self, confusion: bool = True) -> dict[str, Any]:
        d = {
            "accuracy": self.accuracy,
            "weighted_f1": self.weighted_f1,
            "macro_f1": self.macro_f1,
            "per_class_f1": dict(self.per_class_f1),
            "n": self.n,
        }
        if self.shift_accuracy is not None:
            d.update(shift_accuracy=self.shift_accuracy, no_shift_accuracy=self.no_shift_accuracy, n_shift=self.n_shift)
        if confusion:
            d["confusion"] = [list(r) for r in self.confusion]
        return d


def previous_labelled(labels: np.ndarray, speakers: Sequence) -> np.ndarray:
    """(n,) int64 for one dialogue: the index of the same speaker's previous labelled utterance,
    or -1 (unlabelled utterances (-1) and a speaker's first labelled one)."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(speakers) != labels.size:
        raise ValueError(f"{labels.size} labels but {len(speakers)} speakers")
    out = np.full(labels.size, -1, dtype=np.int64)
    last: dict = {}
    for i, (y, s) in enumerate(zip(labels.tolist(), speakers)):
        if y < 0:
            continue
        out[i] = last.get(s, -1)
        last[s] = i
    return out


def shift_mask(labels: np.ndarray, speakers: Sequence[str]) -> np.ndarray:
    """(n,) bool for one dialogue: True where the gold label differs from the gold label of the same
    speaker's previous labelled utterance (an emotion shift; :func:`previous_labelled`). A speaker's
    first labelled utterance and unlabelled utterances (-1) are not shifts."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    prev = previous_labelled(labels, speakers)
    return (prev >= 0) & (labels != labels[np.maximum(prev, 0)])


def _accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return 100.0 * float((y_true == y_pred).mean()) if y_true.size else 0.0


def score(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str], shift: np.ndarray | None = None) -> Scores:
    """Score predictions ``y_pred`` (n,) against ``y_true`` (n,); entries with y_true < 0 are skipped.

    ``shift`` (n,) bool (from :func:`shift_mask` per dialogue, concatenated) adds the accuracy on
    emotion shifts and on the rest.
    """
    y_true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{y_true.shape[0]} labels but {y_pred.shape[0]} predictions")
    keep = y_true >= 0
    extra: dict[str, Any] = {}
    if shift is not None:
        shift = np.asarray(shift, dtype=bool).reshape(-1)
        if shift.shape != keep.shape:
            raise ValueError(f"{keep.size} labels but {shift.size} shift flags")
        sh = shift[keep]
        yt, yp = y_true[keep], y_pred[keep]
        extra = {"shift_accuracy": _accuracy(yt[sh], yp[sh]), "no_shift_accuracy": _accuracy(yt[~sh], yp[~sh]),
                 "n_shift": int(sh.sum())}
    y_true, y_pred = y_true[keep], y_pred[keep]
    ids = list(range(len(labels)))
    if y_true.size == 0:
        return Scores(0.0, 0.0, 0.0, {name: 0.0 for name in labels}, 0,
                      [[0] * len(labels) for _ in labels], **extra)
    per_class = f1_score(y_true, y_pred, labels=ids, average=None, zero_division=0)
    return Scores(
        accuracy=100.0 * float(accuracy_score(y_true, y_pred)),
        weighted_f1=100.0 * float(f1_score(y_true, y_pred, labels=ids, average="weighted", zero_division=0)),
        macro_f1=100.0 * float(f1_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)),
        per_class_f1={name: 100.0 * float(f) for name, f in zip(labels, per_class)},
        n=int(y_true.size),
        confusion=confusion_matrix(y_true, y_pred, labels=ids).astype(int).tolist(),
        **extra,
    )


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """{"mean", "std"} of ``values``; std is the sample standard deviation (0 for one value)."""
    a = np.asarray(list(values), dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0}


def aggregate(runs: Sequence[Scores]) -> dict[str, Any]:
    """Mean ± std over seeds of accuracy, weighted/macro F1 and each class's F1."""
    if not runs:
        raise ValueError("no runs to aggregate")
    names = list(runs[0].per_class_f1)
    out = {
        "seeds": len(runs),
        "accuracy": mean_std([r.accuracy for r in runs]),
        "weighted_f1": mean_std([r.weighted_f1 for r in runs]),
        "macro_f1": mean_std([r.macro_f1 for r in runs]),
        "per_class_f1": {k: mean_std([r.per_class_f1[k] for r in runs]) for k in names},
    }
    if all(r.shift_accuracy is not None for r in runs):
        out["shift_accuracy"] = mean_std([r.shift_accuracy for r in runs])
        out["no_shift_accuracy"] = mean_std([r.no_shift_accuracy for r in runs])
    return out


def dialogue_shifts(dialogues) -> np.ndarray:
    """:func:`shift_mask` of each dialogue (objects with ``labels`` and ``speakers``), concatenated."""
    masks = [shift_mask(d.labels, d.speakers) for d in dialogues]
    return np.concatenate(masks) if masks else np.zeros(0, dtype=bool)


def fmt_pm(ms: dict[str, float]) -> str:
    """``{"mean": 61.234, "std": 0.5}`` -> ``"61.23 ± 0.50"``."""
    return f"{ms['mean']:.2f} ± {ms['std']:.2f}"

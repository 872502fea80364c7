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
    """

    accuracy: float
    weighted_f1: float
    macro_f1: float
    per_class_f1: dict[str, float]
    n: int
    confusion: list[list[int]] = field(default_factory=list)

    def to_dict(self, confusion: bool = True) -> dict[str, Any]:
        d = {
            "accuracy": self.accuracy,
            "weighted_f1": self.weighted_f1,
            "macro_f1": self.macro_f1,
            "per_class_f1": dict(self.per_class_f1),
            "n": self.n,
        }
        if confusion:
            d["confusion"] = [list(r) for r in self.confusion]
        return d


def score(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> Scores:
    """Score predictions ``y_pred`` (n,) against ``y_true`` (n,); entries with y_true < 0 are skipped."""
    y_true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{y_true.shape[0]} labels but {y_pred.shape[0]} predictions")
    keep = y_true >= 0
    y_true, y_pred = y_true[keep], y_pred[keep]
    ids = list(range(len(labels)))
    if y_true.size == 0:
        return Scores(0.0, 0.0, 0.0, {name: 0.0 for name in labels}, 0,
                      [[0] * len(labels) for _ in labels])
    per_class = f1_score(y_true, y_pred, labels=ids, average=None, zero_division=0)
    return Scores(
        accuracy=100.0 * float(accuracy_score(y_true, y_pred)),
        weighted_f1=100.0 * float(f1_score(y_true, y_pred, labels=ids, average="weighted", zero_division=0)),
        macro_f1=100.0 * float(f1_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)),
        per_class_f1={name: 100.0 * float(f) for name, f in zip(labels, per_class)},
        n=int(y_true.size),
        confusion=confusion_matrix(y_true, y_pred, labels=ids).astype(int).tolist(),
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
    return {
        "seeds": len(runs),
        "accuracy": mean_std([r.accuracy for r in runs]),
        "weighted_f1": mean_std([r.weighted_f1 for r in runs]),
        "macro_f1": mean_std([r.macro_f1 for r in runs]),
        "per_class_f1": {k: mean_std([r.per_class_f1[k] for r in runs]) for k in names},
    }


def fmt_pm(ms: dict[str, float]) -> str:
    """``{"mean": 61.234, "std": 0.5}`` -> ``"61.23 ± 0.50"``."""
    return f"{ms['mean']:.2f} ± {ms['std']:.2f}"

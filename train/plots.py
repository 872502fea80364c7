"""PNG figures of a training run: confusion matrix and training curves (matplotlib, Agg)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # no display on training machines; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from train.common import atomic_file  # noqa: E402


def _save(fig, path: Path) -> None:
    """Write the PNG atomically (no half-written file is ever left) and close the figure."""
    try:
        with atomic_file(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)


def plot_confusion(confusion: Sequence[Sequence[int]], labels: Sequence[str], path: Path, title: str = "") -> None:
    """Row-normalised confusion matrix (rows = true label) with counts in each cell."""
    cm = np.asarray(confusion, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    size = 1.0 + 0.75 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true label")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_title(title or "confusion matrix")
    _save(fig, path)


def plot_curves(histories: dict[str, list[dict[str, float]]], path: Path, title: str = "") -> None:
    """Training loss and validation weighted F1 per epoch, one line per seed.

    ``histories``: seed name -> list of per-epoch dicts with keys "epoch", "train_loss", "valid_wf1".
    """
    fig, (ax_loss, ax_f1) = plt.subplots(1, 2, figsize=(11, 4))
    for name, hist in histories.items():
        if not hist:
            continue
        ep = [h["epoch"] for h in hist]
        ax_loss.plot(ep, [h["train_loss"] for h in hist], label=name)
        ax_f1.plot(ep, [h["valid_wf1"] for h in hist], label=name)
        best = max(hist, key=lambda h: h["valid_wf1"])
        ax_f1.scatter([best["epoch"]], [best["valid_wf1"]], marker="*", s=80, zorder=3)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss (joint)")
    ax_loss.grid(alpha=0.3)
    ax_f1.set_xlabel("epoch")
    ax_f1.set_ylabel("validation weighted F1 (%)")
    ax_f1.grid(alpha=0.3)
    ax_f1.legend(fontsize=8)
    fig.suptitle(title or "training curves (★ = selected epoch)")
    _save(fig, path)

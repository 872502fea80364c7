r"""How much the model weighs the utterance itself against its conversation (emotion shifts).

A graph over past turns pulls every utterance towards the conversation's mood: an utterance
whose emotion differs from its speaker's previous one (a *shift*) is often labelled with the
mood instead. Three options (``utterance:`` in the config, all off by default), measured in
the README:

- ``gate``: a learned, per-dimension gate between the utterance's own state :math:`g_u`
  (before the graph) and its context state :math:`z_u` (after it):
  :math:`a = \sigma(W[g_u; z_u] + b)`, the classifier reads :math:`a \odot g_u + (1-a) \odot z_u`.
- ``own_logits``: a context-free head on :math:`g_u`; its logits are added to the classifier's,
  so the utterance's own prediction is an input of the final one. ``own_weight`` > 0 also trains
  that head with its own cross-entropy.
- ``shift_weight``: the cross-entropy weight of training utterances that are shifts (gold label
  differs from the same speaker's previous labelled one), 1 = plain cross-entropy.

All of it is dense and per utterance, so it exports to ONNX and keeps the causal window exact.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from train.config import UtteranceConfig
from train.metrics import shift_mask
from train.model.classifier import UtteranceClassifier


class UtteranceWeighing(nn.Module):
    """The ``utterance:`` options' layers. Shapes: own, ctx (M, N, H); present (N, M) bool."""

    def __init__(self, cfg: UtteranceConfig, hidden: int, classifier_hidden: int, n_classes: int, dropout: float):
        super().__init__()
        self.gate = nn.Linear(2 * hidden, hidden) if cfg.gate else None
        self.own_head = UtteranceClassifier(hidden, classifier_hidden, n_classes, dropout) if cfg.own_logits else None

    def mix(self, own: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """(M, N, H) states the classifier reads: gated own/context states, or ``ctx`` without the gate."""
        if self.gate is None:
            return ctx
        a = torch.sigmoid(self.gate(torch.cat([own, ctx], dim=-1)))
        return a * own + (1.0 - a) * ctx

    def own_logits(self, own: torch.Tensor, present: torch.Tensor) -> torch.Tensor | None:
        """(N, C) context-free logits, or None without ``own_logits``."""
        return None if self.own_head is None else self.own_head(own, present)


def batch_shifts(labels: torch.Tensor, speakers: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(N,) bool: emotion shifts of a batch of dialogues (:func:`train.metrics.shift_mask` of each)."""
    y, s = labels.cpu().numpy(), speakers.cpu().numpy()
    parts, start = [], 0
    for n in lengths.tolist():
        parts.append(shift_mask(y[start:start + n], s[start:start + n].tolist()))
        start += n
    return torch.from_numpy(np.concatenate(parts)).to(labels.device)

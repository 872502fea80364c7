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
- ``shift_aux``: an auxiliary task (training only): with :math:`z_u` the graph state pooled over
  modalities and :math:`p` the same speaker's previous labelled utterance, a head predicts
  :math:`P(\text{shift}_u) = \sigma(\mathrm{MLP}([z_u; z_p; |z_u - z_p|]))`, trained with
  binary cross-entropy weighted by ``shift_aux``, so the states must keep what tells an
  utterance from its speaker's last one. Inference does not use the head.

All of it is dense and per utterance, so it exports to ONNX and keeps the causal window exact.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from train.config import UtteranceConfig
from train.metrics import previous_labelled as dialogue_previous_labelled
from train.model.classifier import UtteranceClassifier


class UtteranceWeighing(nn.Module):
    """The ``utterance:`` options' layers. Shapes: own, ctx (M, N, H); present (N, M) bool."""

    def __init__(self, cfg: UtteranceConfig, hidden: int, classifier_hidden: int, n_classes: int, dropout: float):
        super().__init__()
        self.gate = nn.Linear(2 * hidden, hidden) if cfg.gate else None
        self.own_head = UtteranceClassifier(hidden, classifier_hidden, n_classes, dropout) if cfg.own_logits else None
        self.shift_head = nn.Sequential(nn.Linear(3 * hidden, classifier_hidden), nn.ReLU(), nn.Dropout(dropout),
                                        nn.Linear(classifier_hidden, 1)) if cfg.shift_aux > 0 else None

    def mix(self, own: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """(M, N, H) states the classifier reads: gated own/context states, or ``ctx`` without the gate."""
        if self.gate is None:
            return ctx
        a = torch.sigmoid(self.gate(torch.cat([own, ctx], dim=-1)))
        return a * own + (1.0 - a) * ctx

    def own_logits(self, own: torch.Tensor, present: torch.Tensor) -> torch.Tensor | None:
        """(N, C) context-free logits, or None without ``own_logits``."""
        return None if self.own_head is None else self.own_head(own, present)

    def shift_loss(self, states: torch.Tensor, present: torch.Tensor, labels: torch.Tensor,
                   previous: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy of the shift head (0 without ``shift_aux``, or with no pairs).

        Shapes: states (M, N, H) graph states (absent nodes 0), present (N, M) bool, labels (N,)
        (-1 unlabelled), previous (N,) long from :func:`previous_labelled` (-1: none).
        """
        if self.shift_head is None:
            return states.new_zeros(())
        count = present.sum(dim=1, keepdim=True).clamp(min=1).to(states.dtype)
        z = states.sum(dim=0) / count  # (N, H) mean over the modalities present
        pairs = (previous >= 0) & (labels >= 0)
        if not bool(pairs.any()):
            return self.shift_head(z[:1].repeat(1, 3)).sum() * 0.0  # keeps the head in the graph (DDP)
        u, p = pairs.nonzero(as_tuple=True)[0], previous[pairs]
        logit = self.shift_head(torch.cat([z[u], z[p], (z[u] - z[p]).abs()], dim=-1)).squeeze(-1)
        target = (labels[u] != labels[p]).to(logit.dtype)
        return F.binary_cross_entropy_with_logits(logit, target)


def previous_labelled(labels: torch.Tensor, speakers: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(N,) long: for each utterance of a batch of dialogues, the batch index of the same speaker's
    previous labelled utterance in its dialogue, or -1 (:func:`train.metrics.previous_labelled` of each)."""
    y, s = labels.cpu().numpy(), speakers.cpu().numpy()
    parts, start = [], 0
    for n in lengths.tolist():
        prev = dialogue_previous_labelled(y[start:start + n], s[start:start + n].tolist())
        parts.append(np.where(prev >= 0, prev + start, -1))
        start += n
    return torch.from_numpy(np.concatenate(parts)).to(labels.device)


def batch_shifts(labels: torch.Tensor, speakers: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(N,) bool: emotion shifts of a batch of dialogues (:func:`train.metrics.shift_mask` of each)."""
    prev = previous_labelled(labels, speakers, lengths)
    return (prev >= 0) & (labels != labels[prev.clamp(min=0)])

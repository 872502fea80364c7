r"""Part 5 of AR-IIGCN: pool each utterance's present modality nodes, then an MLP classifier.

Pooling is the masked mean over the utterance's present modalities (chosen over
concat-with-mask because it keeps one input width for any modality subset and treats a missing
modality as absent rather than as a zero vector):

.. math::
    \bar{z}_i = \frac{\sum_m p_{im}\, z^m_i}{\max(1, \sum_m p_{im})}, \qquad
    \text{logits}_i = \mathbf{W}_2\, \operatorname{Dropout}(\operatorname{ReLU}(\mathbf{W}_1 \bar{z}_i + \mathbf{b}_1)) + \mathbf{b}_2

An utterance with no modality at all pools to 0 and gets the classifier's prior.
"""
from __future__ import annotations

import torch
from torch import nn

from train.model.mlp import mlp


def masked_mean(states: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Shapes: states (M, N, H), present (N, M) bool -> (N, H)."""
    w = present.t().unsqueeze(-1).to(states.dtype)  # (M, N, 1)
    return (states * w).sum(0) / w.sum(0).clamp(min=1.0)


class UtteranceClassifier(nn.Module):
    """Masked-mean pooling and ``Linear -> ReLU -> Dropout -> Linear``. (M, N, H), (N, M) -> (N, C)."""

    def __init__(self, hidden: int, classifier_hidden: int, n_classes: int, dropout: float = 0.0):
        super().__init__()
        self.net = mlp(hidden, [classifier_hidden], n_classes, dropout)

    def forward(self, states: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return self.net(masked_mean(states, present))

"""Part 1 of AR-IIGCN: a separate MLP per modality into its own ``hidden``-wide space."""
from __future__ import annotations

import torch
from torch import nn

from train.model.mlp import mlp


class ModalityProjection(nn.Module):
    r"""One modality's projection :math:`h_i = \mathrm{MLP}_m(x_i)`.

    Optionally ``LayerNorm(in_dim)`` first (``model.input_norm``), then ``layers`` times
    ``Linear -> ReLU -> Dropout``; the first maps ``in_dim`` to ``hidden``.
    Modalities never share these weights, so each lands in a space of its own (the paper's
    "separate feature spaces"); the adversarial generators then bring them together.

    Shapes: x (N, in_dim) float32 -> (N, hidden).
    """

    def __init__(self, in_dim: int, hidden: int, layers: int = 1, dropout: float = 0.0, input_norm: bool = True):
        super().__init__()
        if layers < 1:
            raise ValueError(f"model.proj_layers must be >= 1, got {layers}")
        self.norm = nn.LayerNorm(in_dim) if input_norm else nn.Identity()
        self.net = mlp(in_dim, [hidden] * layers, None, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(x))

r"""Part 1 of AR-IIGCN: a separate MLP per modality into its own ``hidden``-wide space."""
from __future__ import annotations

import torch
from torch import nn

from train.model.mlp import mlp


class ModalityProjection(nn.Module):
    r"""One modality's projection :math:`h_i = \mathrm{MLP}_m(x_i)`.

    Optionally, first (in this order):

    * ``standardise`` (``model.input_standardise``): each input feature standardised by the
      training rows' statistics, :math:`(x - \mu) / \sqrt{\sigma^2 + \epsilon}`. This is
      :class:`torch.nn.BatchNorm1d` without affine parameters and with a cumulative running
      average (``momentum=None``), applied to the *present* rows only: while training it uses
      the batch's statistics and accumulates them; in eval mode (inference, export) it is a fixed
      per-feature affine map, so one utterance's output never depends on another's. Community
      audio features (openSMILE IS10, 1582-d) span many orders of magnitude per feature; a
      per-utterance LayerNorm leaves those scale differences in place.
    * ``input_norm``: ``LayerNorm(in_dim)`` over each row (per utterance).

    then ``layers`` times ``Linear -> ReLU -> Dropout``; the first maps ``in_dim`` to ``hidden``.
    Modalities never share these weights, so each lands in a space of its own (the paper's
    "separate feature spaces"); the adversarial generators then bring them together.

    Shapes: x (N, in_dim) float32, present (N,) bool or None (every row present) -> (N, hidden).
    Absent rows may hold anything finite; their outputs are meaningless (the model masks them).
    """

    def __init__(self, in_dim: int, hidden: int, layers: int = 1, dropout: float = 0.0, input_norm: bool = True,
                 standardise: bool = False):
        super().__init__()
        if layers < 1:
            raise ValueError(f"model.proj_layers must be >= 1, got {layers}")
        self.standardise = nn.BatchNorm1d(in_dim, affine=False, momentum=None) if standardise else None
        self.norm = nn.LayerNorm(in_dim) if input_norm else nn.Identity()
        self.net = mlp(in_dim, [hidden] * layers, None, dropout)

    def _standardised(self, x: torch.Tensor, present: torch.Tensor | None) -> torch.Tensor:
        """Training: statistics of the present rows only (absent rows pass through, unused)."""
        if not self.training or present is None:
            return _batch_norm(self.standardise, x)
        out = x.clone()
        out[present] = _batch_norm(self.standardise, x[present])
        return out

    def forward(self, x: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
        if self.standardise is not None:
            x = self._standardised(x, present)
        return self.net(self.norm(x))


def _batch_norm(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """``bn(x)``; a training batch of fewer than two rows (no variance) uses the running statistics."""
    if bn.training and x.shape[0] < 2:
        return nn.functional.batch_norm(x, bn.running_mean, bn.running_var, training=False, eps=bn.eps)
    return bn(x)

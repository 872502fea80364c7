r"""The fine-tuned text encoder's own emotion head, mixed into the graph's probabilities (late fusion).

.. math:: p_u = (1 - w)\, p^{graph}_u + w\, \operatorname{softmax}(W x_u \sqrt{D} + b)

where :math:`x_u` (D,) is utterance u's text feature (the encoder's unit-norm embedding, what
the graph reads), :math:`W` (C, D) and :math:`b` (C,) the linear head that ``train.finetune``
trained together with the encoder (``head.safetensors``, input scaled by :math:`\sqrt{D}` as
there), and :math:`w` = ``model.text_head_weight``. Utterances without text keep
:math:`p^{graph}_u`.

Why: the graph model trains on *cross-fitted* text features of the training utterances (each
embedded by an encoder that never saw its label), so it learns to trust the words only as much
as an encoder that has not seen them deserves. The encoder's own head was trained on all of them
and reads the words better than the graph credits; it only ever runs at inference, so it leaks
nothing into training. The head is fixed (buffers, saved with the model): nothing here trains.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from train.common import InputError


class TextHeadMix(nn.Module):
    """``forward(log_probs (N, C), text (N, D), present (N,) bool) -> (N, C)`` mixed log probabilities."""

    def __init__(self, dim: int, n_classes: int, weight: float):
        super().__init__()
        if not 0.0 < weight < 1.0:
            raise ValueError(f"text head weight must be in (0, 1), got {weight}")
        self.mix = float(weight)
        self.scale = math.sqrt(dim)
        self.register_buffer("head_weight", torch.zeros(n_classes, dim))
        self.register_buffer("head_bias", torch.zeros(n_classes))

    def load_head(self, path: str | Path) -> None:
        """Copy ``W`` and ``b`` from an encoder directory's ``head.safetensors``; InputError when it
        is missing, unreadable or of another shape."""
        from safetensors.torch import load_file

        f = Path(path)
        if not f.is_file():
            raise InputError(f"no such file: model.text_head_weight needs the fine-tuned encoder's emotion head "
                             "(train.finetune writes it beside the adapter)", path=str(f))
        try:
            head = load_file(str(f))
        except Exception as e:  # safetensors raises its own error types for a damaged file
            raise InputError(f"cannot read the encoder's emotion head: {str(e).splitlines()[0]}", path=str(f)) from None
        w, b = head.get("weight"), head.get("bias")
        if w is None or b is None or tuple(w.shape) != tuple(self.head_weight.shape) or tuple(b.shape) != tuple(self.head_bias.shape):
            got = None if w is None else tuple(w.shape)
            raise InputError(f"the encoder's emotion head has weight {got}, the model needs {tuple(self.head_weight.shape)} "
                             "(classes x text feature width)", path=str(f))
        with torch.no_grad():
            self.head_weight.copy_(w)
            self.head_bias.copy_(b)

    def forward(self, log_probs: torch.Tensor, text: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        text = torch.where(present[:, None], text, torch.zeros_like(text))  # absent rows may hold NaN
        head = torch.softmax(text * self.scale @ self.head_weight.T + self.head_bias, dim=-1)
        mixed = (1.0 - self.mix) * torch.exp(log_probs) + self.mix * head
        return torch.where(present[:, None], torch.log(mixed.clamp(min=1e-12)), log_probs)

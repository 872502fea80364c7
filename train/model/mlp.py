"""The one multi-layer perceptron builder used by every part of the model."""
from __future__ import annotations

from torch import nn


def mlp(in_dim: int, hidden: list[int], out_dim: int | None, dropout: float = 0.0,
        activation: type[nn.Module] = nn.ReLU, final_activation: bool = False) -> nn.Sequential:
    """``Linear -> activation -> Dropout`` per width in ``hidden``, then an optional ``Linear`` to ``out_dim``.

    Shapes: (*, in_dim) -> (*, out_dim), or (*, hidden[-1]) when ``out_dim`` is None.
    ``final_activation`` adds ``activation`` (no dropout) after the output layer.
    """
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), activation()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        d = h
    if out_dim is not None:
        layers.append(nn.Linear(d, out_dim))
        if final_activation:
            layers.append(activation())
    return nn.Sequential(*layers)

r"""A seed ensemble: several AR-IIGCN models trained from different seeds, probabilities averaged.

Its "logits" are the log of the members' mean class probabilities,

.. math:: \ell_u = \log \frac{1}{K} \sum_k \operatorname{softmax}(\ell^{(k)}_u),

so every consumer that applies a softmax (prediction, the ONNX export) gets the averaged
probabilities exactly. The members share the input features, so live the text encoder runs
once; only the graph step (a fraction of a millisecond) runs K times. ``model.ensemble: K`` in
the config; the weights file holds ``members.<k>.<parameter>``.

With ``model.text_head_weight`` w > 0 the averaged probabilities are then mixed with the fine-tuned
text encoder's own head (:mod:`.text_head`, ``text_head.*`` in the weights file); a model with one
seed and a text head is an ensemble of one.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from train.batch import GraphBatch
from train.config import Config
from train.model.ariigcn import ARIIGCN, ModelOutput
from train.model.text_head import TextHeadMix


def member_config(cfg: Config) -> Config:
    """The config of one member: ``cfg`` with ``model.ensemble`` 1."""
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, ensemble=1))


class SeedEnsemble(nn.Module):
    """K :class:`ARIIGCN` members with one interface: forward / forward_dense / predict_proba."""

    def __init__(self, cfg: Config, dims: dict[str, int], n_classes: int):
        super().__init__()
        self.cfg = cfg
        one = member_config(cfg)
        self.members = nn.ModuleList([ARIIGCN(one, dims, n_classes) for _ in range(cfg.model.ensemble)])
        first = self.members[0]
        self.modalities, self.dims, self.n_classes = first.modalities, first.dims, first.n_classes
        self.num_relations = first.num_relations
        w = cfg.model.text_head_weight
        self.text_head = TextHeadMix(self.dims["text"], n_classes, w) if w > 0 else None

    @property
    def gcn(self):
        """The first member's graph layers (None without the graph): the export reads its shape."""
        return self.members[0].gcn

    @staticmethod
    def _mean_log_probs(logits: list[torch.Tensor]) -> torch.Tensor:
        probs = torch.stack([torch.softmax(x, dim=-1) for x in logits]).mean(0)
        return torch.log(probs.clamp(min=1e-12))

    def forward(self, batch: GraphBatch, adversarial: bool = False, discriminator_only: bool = False) -> ModelOutput:
        """Inference only: ``logits`` are the log mean probabilities; states are the first member's."""
        if discriminator_only:
            raise RuntimeError("a seed ensemble is not trained as one model")
        outs = [m(batch, adversarial=False) for m in self.members]
        logits = self._mix(self._mean_log_probs([o.logits for o in outs]), batch.features, batch.present)
        return ModelOutput(logits=logits, states=outs[0].states, generated=outs[0].generated)

    def forward_dense(self, features: dict[str, torch.Tensor], present: torch.Tensor,
                      adjacency: torch.Tensor | None) -> torch.Tensor:
        """(N, C) log mean probabilities, dense formulation (see :meth:`ARIIGCN.forward_dense`)."""
        return self._mix(self._mean_log_probs([m.forward_dense(features, present, adjacency) for m in self.members]),
                         features, present)

    def _mix(self, log_probs: torch.Tensor, features: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """(N, C) log probabilities, mixed with the text encoder's head when there is one."""
        if self.text_head is None:
            return log_probs
        return self.text_head(log_probs, features["text"], present[:, self.modalities.index("text")])

    @torch.no_grad()
    def predict_proba(self, batch: GraphBatch) -> torch.Tensor:
        return torch.exp(self.forward(batch).logits)


def build_model(cfg: Config, dims: dict[str, int], n_classes: int) -> nn.Module:
    """:class:`ARIIGCN`, or a :class:`SeedEnsemble` when ``cfg.model.ensemble`` > 1 or it has a text head."""
    return SeedEnsemble(cfg, dims, n_classes) if is_ensemble(cfg) else ARIIGCN(cfg, dims, n_classes)


def is_ensemble(cfg: Config) -> bool:
    """Whether the shipped model is a :class:`SeedEnsemble` (several seeds, or a text head to mix in)."""
    return cfg.model.ensemble > 1 or cfg.model.text_head_weight > 0

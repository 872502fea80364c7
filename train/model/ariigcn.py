r"""AR-IIGCN (arXiv 2312.16778): the whole model and its joint loss.

For a :class:`train.batch.GraphBatch` of N utterances and M modalities (node ``m * N + u``):

1. projection (:mod:`.projection`): :math:`h^m_u = \mathrm{MLP}_m(\mathrm{LN}(x^m_u))` (optionally after
   per-feature standardisation by training statistics), absent rows zeroed;
2. adversarial generators (:mod:`.adversarial`): :math:`g^m_u = G_m(h^m_u)`;
3. graph (:mod:`.rgcn`): :math:`Z = \mathrm{RGCN}(g \odot p)` over the conversation graph, then
   absent nodes are zeroed again (they have no edges, so they never reach a present node);
   ``model.use_graph: false`` skips this (:math:`Z = g \odot p`);
4. contrastive losses (:mod:`.contrastive`) on :math:`Z`;
5. classifier (:mod:`.classifier`): masked mean of :math:`Z^m_u` over present :math:`m`, MLP.

Joint loss (:meth:`ARIIGCN.losses`), weights from the config:

.. math::
    \mathcal{L} = \mathcal{L}_{CE} + w_{adv}\,\mathcal{L}_{adv}
        + w_{intra}\,\mathcal{L}_{intra} + w_{inter}\,\mathcal{L}_{inter}

with :math:`\mathcal{L}_{adv} = \mathcal{L}_D + \mathcal{L}_G` (``schedule: paper``, the default:
discriminators on detached features, generators through frozen discriminators),
:math:`\mathcal{L}_G` with a separate discriminator step (``schedule: alternating``), or
:math:`\mathcal{L}_D` under gradient reversal (``schedule: grl``, symmetric); see
:mod:`.adversarial`. Switched
off (and 0): adversarial when ``adversarial.enabled`` is false or M = 1; ``intra``/``inter``
when ``contrastive.intra``/``contrastive.inter`` is false; inter also when M = 1. The generator
layers stay in the network either way, so ablations change the objective, not the architecture.

Nothing couples utterances except graph edges, so in eval mode with ``graph.future = 0`` an
utterance's logits never depend on later utterances.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from train.batch import GraphBatch
from train.config import Config
from train.common import InputError
from train.graph import num_relations
from train.model.adversarial import (Generator, ModalityAdversary, discriminator_loss, generator_loss, grad_reverse,
                                     r1_penalty)
from train.model.classifier import UtteranceClassifier
from train.model.contrastive import contrastive_losses
from train.model.projection import ModalityProjection
from train.model.rgcn import RelationalGCN
from train.model.utterance import UtteranceWeighing, batch_shifts, previous_labelled


@dataclass
class ModelOutput:
    """What :meth:`ARIIGCN.forward` returns (M modalities, N utterances, C classes, H hidden).

    Attributes:
        logits: (N, C), or None from a discriminator-only pass.
        states: (M, N, H) node states after the graph; absent nodes are 0.
        generated: (M, N, H) generator outputs (input of the graph).
        judged: (M, M, N) discriminator logits ``D_m(g^k_u)`` that train the discriminators, or
            None when the adversary is off or was not asked for; under ``grl`` computed through
            gradient reversal, under ``paper`` on detached generated features.
        judged_frozen: (M, M, N) the same logits through frozen discriminators (``paper`` only):
            what the generator loss is computed from.
        judge_input: (M, N, H) the detached generated features ``judged`` was computed from, with
            ``requires_grad`` when the R1 penalty needs their gradient; else None.
        own_logits: (N, C) the context-free head's logits (``utterance.own_logits``), else None.
    """

    logits: torch.Tensor | None
    states: torch.Tensor | None
    generated: torch.Tensor
    judged: torch.Tensor | None = None
    judged_frozen: torch.Tensor | None = None
    judge_input: torch.Tensor | None = None
    own_logits: torch.Tensor | None = None


class ARIIGCN(nn.Module):
    """AR-IIGCN for emotion recognition in conversation.

    Args:
        cfg: the full config; uses ``data.modalities``, ``graph``, ``model``, ``adversarial``,
            ``contrastive``.
        dims: modality -> input feature width; must cover every modality in ``cfg.data.modalities``.
        n_classes: number of emotion labels C.
    """

    def __init__(self, cfg: Config, dims: dict[str, int], n_classes: int):
        super().__init__()
        self.cfg = cfg
        self.modalities = list(cfg.data.modalities)
        missing = [m for m in self.modalities if m not in dims]
        if missing:
            raise InputError(f"no feature dimension for modality {missing[0]!r} (have: {', '.join(sorted(dims)) or 'none'})")
        self.dims = {m: int(dims[m]) for m in self.modalities}
        self.n_classes = int(n_classes)
        mc, n_mod = cfg.model, len(self.modalities)
        self.num_relations = num_relations(n_mod, cfg.graph.speaker_relations, cfg.graph.inter_modal)

        self.projections = nn.ModuleDict(
            {m: ModalityProjection(self.dims[m], mc.hidden, mc.proj_layers, mc.dropout, mc.input_norm,
                                  mc.input_standardise)
             for m in self.modalities})
        relu = cfg.adversarial.generator == "relu"
        self.generators = nn.ModuleDict({m: Generator(mc.hidden, mc.dropout, relu=relu) for m in self.modalities})
        self.adversary = ModalityAdversary(n_mod, mc.hidden) if self.adversarial_active else None
        self.gcn = RelationalGCN(mc.hidden, self.num_relations, mc.gcn_layers, mc.dropout) if mc.use_graph else None
        self.classifier = UtteranceClassifier(mc.hidden, mc.classifier_hidden, self.n_classes, mc.dropout)
        self.utterance = UtteranceWeighing(cfg.utterance, mc.hidden, mc.classifier_hidden, self.n_classes, mc.dropout)

    # -----------------------------------------------------------------------------------------
    @property
    def adversarial_active(self) -> bool:
        """Whether the adversarial part exists: enabled in the config and at least two modalities."""
        return bool(self.cfg.adversarial.enabled) and len(self.modalities) > 1

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """The discriminators' parameters (empty when the adversary is off)."""
        return list(self.adversary.parameters()) if self.adversary is not None else []

    def generator_parameters(self) -> list[nn.Parameter]:
        """Every parameter except the discriminators' (projections, generators, GCN, classifier)."""
        skip = {id(p) for p in self.discriminator_parameters()}
        return [p for p in self.parameters() if id(p) not in skip]

    # -----------------------------------------------------------------------------------------
    def _check(self, batch: GraphBatch) -> None:
        if list(batch.modalities) != self.modalities:
            raise InputError(f"batch has modalities {batch.modalities}, the model was built for {self.modalities}")
        for m in self.modalities:
            d = batch.features[m].shape[1]
            if d != self.dims[m]:
                raise InputError(f"{m} features are {d}-d but the model expects {self.dims[m]}-d "
                                 f"(were they made by a different extractor?)")

    def _generate(self, features: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """(M, N, H) generator outputs; absent rows are fed as 0 whatever ``features`` holds there."""
        out = []
        for k, m in enumerate(self.modalities):
            x = torch.where(present[:, k:k + 1], features[m], torch.zeros_like(features[m]))
            out.append(self.generators[m](self.projections[m](x, present[:, k])))
        return torch.stack(out)

    def _node_states(self, features: dict[str, torch.Tensor], present: torch.Tensor,
                     propagate) -> tuple[torch.Tensor, torch.Tensor]:
        """``(generated, states)``, both (M, N, H); ``propagate`` maps (M*N, H) -> (M*N, H) or is None.

        Absent nodes enter the graph as 0 and leave it as 0.
        """
        gen = self._generate(features, present)
        n_mod, n, h = gen.shape
        node_mask = present.t().unsqueeze(-1).to(gen.dtype)  # (M, N, 1)
        x = gen * node_mask
        if propagate is not None:
            x = propagate(x.reshape(n_mod * n, h)).reshape(n_mod, n, h) * node_mask
        return gen, x

    def forward(self, batch: GraphBatch, adversarial: bool = True, discriminator_only: bool = False) -> ModelOutput:
        """Run the model on ``batch``.

        Args:
            adversarial: also compute the discriminator logits (skip at inference).
            discriminator_only: the discriminator step of the ``alternating`` schedule: the
                generators run without gradient, only ``judged`` is computed (``logits`` None).
        """
        self._check(batch)
        present = batch.present
        if discriminator_only:
            if self.adversary is None:
                raise RuntimeError("discriminator_only pass asked for, but the adversary is off")
            with torch.no_grad():
                gen = self._generate(batch.features, present)
            d_in = self._judge_input(gen)
            return ModelOutput(logits=None, states=None, generated=gen, judged=self.adversary.judge(d_in), judge_input=d_in)

        gen, x = self._node_states(batch.features, present,
                                   None if self.gcn is None else lambda v: self.gcn(v, batch.edge_index, batch.edge_type))
        logits, own_logits = self._classify(gen, x, present)

        judged = frozen = d_in = None
        if adversarial and self.adversary is not None:
            schedule = self.cfg.adversarial.schedule
            if schedule == "grl":
                judged = self.adversary.judge(grad_reverse(gen, self.cfg.adversarial.grl_lambda))
            elif schedule == "paper":
                d_in = self._judge_input(gen)
                judged = self.adversary.judge(d_in)
                frozen = self.adversary.judge_frozen(gen)
            else:  # alternating: the discriminators learn in their own step; here only L_G is used
                judged = self.adversary.judge(gen)
        return ModelOutput(logits=logits, states=x, generated=gen, judged=judged, judged_frozen=frozen, judge_input=d_in,
                           own_logits=own_logits)

    def _classify(self, gen: torch.Tensor, x: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, C) logits from the graph states ``x`` and the own states ``gen`` (both (M, N, H)),
        and the context-free logits (or None); see :mod:`train.model.utterance`."""
        own = gen * present.t().unsqueeze(-1).to(gen.dtype)
        logits = self.classifier(self.utterance.mix(own, x), present)
        own_logits = self.utterance.own_logits(own, present)
        return (logits if own_logits is None else logits + own_logits), own_logits

    def _judge_input(self, gen: torch.Tensor) -> torch.Tensor:
        """``gen`` detached, requiring grad when the R1 penalty will need its gradient."""
        d_in = gen.detach()
        if self.cfg.adversarial.r1 > 0 and torch.is_grad_enabled():
            d_in.requires_grad_(True)
        return d_in

    def forward_dense(self, features: dict[str, torch.Tensor], present: torch.Tensor,
                      adjacency: torch.Tensor | None) -> torch.Tensor:
        """Logits computed with dense matrices only: the formulation to export (ONNX has no scatter).

        Equal to ``forward(batch).logits`` when ``adjacency`` is
        :func:`train.model.rgcn.row_normalised_adjacency` of the batch's edges (modality-major nodes).

        Shapes: features modality -> (N, d_m) (absent rows may hold anything, NaN too), present
        (N, M) bool, adjacency (R, M*N, M*N) row-normalised (unused, may be None, without the
        graph) -> (N, C).
        """
        gen, x = self._node_states(features, present,
                                   None if self.gcn is None else lambda v: self.gcn.forward_dense(v, adjacency))
        return self._classify(gen, x, present)[0]

    @torch.no_grad()
    def predict_proba(self, batch: GraphBatch) -> torch.Tensor:
        """(N, C) class probabilities (softmax of the logits), without the adversary."""
        return torch.softmax(self.forward(batch, adversarial=False).logits, dim=-1)

    # -----------------------------------------------------------------------------------------
    def discriminator_loss(self, out: ModelOutput, batch: GraphBatch) -> torch.Tensor:
        """:math:`\\mathcal{L}_D` of ``out.judged``, plus the R1 penalty where ``out`` carries its input
        (the alternating schedule's discriminator step)."""
        if out.judged is None:
            raise RuntimeError("no discriminator logits in this output (adversary off, or adversarial=False)")
        return discriminator_loss(out.judged, batch.present) + self._r1(out, batch)

    def _r1(self, out: ModelOutput, batch: GraphBatch) -> torch.Tensor:
        """:math:`\\tfrac{\\gamma}{2}` R1 (:func:`.adversarial.r1_penalty`), or 0 when off or not computable."""
        d_in, gamma = out.judge_input, self.cfg.adversarial.r1
        if gamma <= 0 or d_in is None or not d_in.requires_grad or not out.judged.requires_grad:
            return out.judged.new_zeros(())
        return 0.5 * gamma * r1_penalty(out.judged, d_in, batch.present)

    def losses(self, out: ModelOutput, batch: GraphBatch, class_weights: torch.Tensor | None = None
               ) -> dict[str, torch.Tensor]:
        """Every loss term and the weighted ``total``.

        Returns a dict of scalars: ``ce`` (cross-entropy over labelled utterances, optional
        class weights (C,)), ``adv`` (the adversarial term in ``total``), ``adv_d``, ``adv_g``, ``adv_r1``,
        ``intra``, ``inter``, ``shift`` (``utterance.shift_aux``) and ``total``. Switched-off terms are 0.
        """
        if out.logits is None or out.states is None:
            raise RuntimeError("losses need a full forward pass, not a discriminator-only one")
        labels = batch.labels
        labelled = labels >= 0
        if bool(labelled.any()):
            top = int(labels.max())
            if top >= self.n_classes:
                raise InputError(f"label id {top} but the model has {self.n_classes} classes")
            uc = self.cfg.utterance
            if uc.shift_weight != 1.0:  # emotion shifts weigh more (or less) in the cross-entropy
                w = 1.0 + (uc.shift_weight - 1.0) * batch_shifts(labels, batch.speakers, batch.lengths).to(out.logits.dtype)
                per = F.cross_entropy(out.logits[labelled], labels[labelled], weight=class_weights, reduction="none")
                ce = (per * w[labelled]).sum() / w[labelled].sum()
            else:
                ce = F.cross_entropy(out.logits[labelled], labels[labelled], weight=class_weights)
            if out.own_logits is not None and uc.own_weight > 0:
                ce = ce + uc.own_weight * F.cross_entropy(out.own_logits[labelled], labels[labelled], weight=class_weights)
        else:
            ce = out.logits.sum() * 0.0  # keeps the graph connected (DDP) when a batch has no labels
            if out.own_logits is not None:
                ce = ce + out.own_logits.sum() * 0.0
        zero = out.logits.new_zeros(())

        ac, cc = self.cfg.adversarial, self.cfg.contrastive
        adv_d = adv_g = adv = adv_r1 = zero
        if out.judged is not None:
            adv_d = discriminator_loss(out.judged, batch.present)
            adv_g = generator_loss(out.judged if out.judged_frozen is None else out.judged_frozen, batch.present)
            if ac.schedule == "paper":
                adv_r1 = self._r1(out, batch)
            adv = {"grl": adv_d, "paper": adv_d + adv_r1 + adv_g, "alternating": adv_g}[ac.schedule]

        intra, inter = zero, zero
        want_intra, want_inter = cc.intra and cc.intra_weight > 0, cc.inter and cc.inter_weight > 0
        if want_intra or want_inter:
            intra, inter = contrastive_losses(out.states, batch.present, labels, cc.temperature,
                                              intra=want_intra, inter=want_inter)
        shift = zero
        if self.cfg.utterance.shift_aux > 0:
            shift = self.utterance.shift_loss(out.states, batch.present, labels,
                                              previous_labelled(labels, batch.speakers, batch.lengths))
        total = (ce + ac.weight * adv + cc.intra_weight * intra + cc.inter_weight * inter
                 + self.cfg.utterance.shift_aux * shift)
        return {"ce": ce, "adv": adv, "adv_d": adv_d, "adv_g": adv_g, "adv_r1": adv_r1, "intra": intra, "inter": inter,
                "shift": shift, "total": total}

r"""Part 4 of AR-IIGCN: intra- and inter-modal graph contrastive losses (supervised-contrastive style).

Computed on the GCN's output node states :math:`z`, L2-normalised, of *labelled, present* nodes
only. For an anchor node :math:`a` with candidate set :math:`A(a)` and positives
:math:`P(a) \subseteq A(a)` (temperature :math:`\tau`, :math:`s_{ab} = z_a^\top z_b / \tau`):

.. math::
    \ell(a) = -\frac{1}{|P(a)|} \sum_{p \in P(a)} \Big( s_{ap} - \log \sum_{b \in A(a)} e^{s_{ab}} \Big)

and the loss is the mean of :math:`\ell(a)` over anchors with at least one positive (0 if none).

* intra-modal: :math:`A(a)` = other nodes of the *same* modality, :math:`P(a)` = those with the
  same emotion; minimising it pushes apart different emotions within each modality.
* inter-modal: :math:`A(a)` = nodes of the *other* modalities (the same utterance included),
  :math:`P(a)` = those with the same emotion; it pulls together one emotion across modalities.
  With one modality :math:`A(a)` is empty and the loss is 0.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def supervised_contrastive(z: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor, temperature: float,
                           same_group: bool) -> torch.Tensor:
    """The loss above over K nodes.

    Args:
        z: (K, H) node states (normalised here).
        labels: (K,) int64 emotion ids (all >= 0).
        groups: (K,) int64 modality of each node.
        temperature: :math:`\\tau > 0`.
        same_group: True for the intra-modal candidate set, False for the inter-modal one.

    Returns: scalar tensor (0 when no anchor has a positive).
    """
    if z.shape[0] < 2:
        return z.new_zeros(())
    z = F.normalize(z, dim=-1)
    sim = z @ z.t() / temperature
    same = groups[:, None] == groups[None, :]
    cand = same if same_group else ~same
    cand = cand & ~torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    pos = cand & (labels[:, None] == labels[None, :])
    n_pos = pos.sum(1)
    anchors = n_pos > 0
    if not bool(anchors.any()):
        return z.new_zeros(())
    log_den = torch.logsumexp(sim.masked_fill(~cand, float("-inf")), dim=1)  # finite for anchors
    log_prob = sim - log_den[:, None]
    per_anchor = -(log_prob.masked_fill(~pos, 0.0).sum(1)[anchors]) / n_pos[anchors]
    return per_anchor.mean()


def contrastive_losses(states: torch.Tensor, present: torch.Tensor, labels: torch.Tensor, temperature: float,
                       intra: bool = True, inter: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(intra, inter)`` losses of the node states of one batch (a disabled one is 0).

    Shapes: states (M, N, H), present (N, M) bool, labels (N,) int64 (-1 = unlabelled).
    """
    n_mod, n, _ = states.shape
    keep = (present & (labels >= 0)[:, None]).t().reshape(-1)  # (M*N,) modality-major like states
    z = states.reshape(n_mod * n, -1)[keep]
    y = labels.repeat(n_mod)[keep]
    g = torch.arange(n_mod, device=states.device).repeat_interleave(n)[keep]
    zero = states.new_zeros(())
    l_intra = supervised_contrastive(z, y, g, temperature, same_group=True) if intra else zero
    l_inter = supervised_contrastive(z, y, g, temperature, same_group=False) if inter and n_mod > 1 else zero
    return l_intra, l_inter

r"""Part 2 of AR-IIGCN: adversarial representation between modalities.

Every modality :math:`m` has a generator :math:`G_m` and a discriminator :math:`D_m`.
:math:`G_m` maps the projected features :math:`h^m_i` to :math:`g^m_i = G_m(h^m_i)`, the
representation the graph sees. :math:`D_m(g) \in \mathbb{R}` is a logit for "``g`` lies in
modality :math:`m`'s space". Each modality's generated features are judged by the *other*
modalities' discriminators: :math:`G_k` (:math:`k \ne m`) tries to make :math:`D_m` accept
:math:`g^k`, while :math:`D_m` learns to accept only :math:`g^m`. When no discriminator can
tell the modalities apart, the generated spaces are aligned (the paper's "eliminate
heterogeneity among modalities"). With :math:`d^{m,k}_i = D_m(g^k_i)` and binary
cross-entropy :math:`\ell(z, y)`, over present nodes only:

.. math::
    \mathcal{L}_D = \frac{1}{M} \sum_m \tfrac12 \Big( \operatorname{mean}_i \ell(d^{m,m}_i, 1)
        + \frac{1}{M-1}\sum_{k \ne m} \operatorname{mean}_i \ell(d^{m,k}_i, 0) \Big)

.. math::
    \mathcal{L}_G = \frac{1}{M(M-1)} \sum_m \sum_{k \ne m} \operatorname{mean}_i \ell(d^{m,k}_i, 1)

Schedules (``cfg.adversarial.schedule``):

* ``"paper"`` (the default) — the paper's objective, trained jointly with one optimizer: the
  discriminators minimise :math:`\mathcal{L}_D` on the generated features *detached* (no
  gradient reaches a generator through it), and the generators minimise :math:`\mathcal{L}_G`
  through *frozen* discriminators (no gradient reaches a discriminator through it). So each
  :math:`G_k` is trained only to make the other modalities' :math:`D_m` take :math:`g^k` for
  theirs; nothing pushes :math:`G_m` away from its own :math:`D_m`. The joint loss adds
  :math:`w\,(\mathcal{L}_D + \mathcal{L}_G)`; the two terms reach disjoint parameters.
* ``"alternating"`` — the same objective as ``"paper"``, in two optimizer steps: first the
  discriminators step on :math:`\mathcal{L}_D` with the generated features detached, then
  everything else steps on the joint loss with :math:`w\,\mathcal{L}_G`; the discriminators
  have their own optimizer (:meth:`train.model.ARIIGCN.discriminator_parameters`).
* ``"grl"`` — symmetric domain confusion (DANN-style), kept as an option: the discriminators
  see :math:`\mathrm{GRL}_\lambda(g)` (identity forward, gradient times :math:`-\lambda`
  backward) and the joint loss adds :math:`w\,\mathcal{L}_D`. Generators maximise the whole
  :math:`\mathcal{L}_D`, *including* its real term: :math:`G_m` is also pushed to make its own
  :math:`D_m` reject :math:`g^m`. That is not the paper's objective.

Under ``paper`` and ``alternating`` the discriminator loss also carries an R1 gradient penalty,
:math:`\tfrac{\gamma}{2}\,\mathbb{E}\lVert\nabla_g D_m(g^m)\rVert^2` on real inputs
(``adversarial.r1`` = :math:`\gamma`). Without it the game does not settle: the generators chase
the discriminators' current boundaries, the modalities swap places rather than merge, and a fresh
linear probe still tells them apart at any moment (measured: 100% probe accuracy with and without
the adversary, tests/test_mechanisms.py); with it, simultaneous training converges
(Mescheder et al., "Which training methods for GANs do actually converge?", ICML 2018).

The generators are affine maps :math:`g = W h + b` (``h`` is already a ReLU output): a ReLU here
would leave a unit that is off for every input of one modality with no gradient, a difference
between the modalities that the generator could never remove.

With one modality there is nobody to judge: no discriminators exist and both losses are 0.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from train.model.mlp import mlp


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lam: float) -> torch.Tensor:
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.lam * grad, None


def grad_reverse(x: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    """Gradient reversal: identity forward, gradient multiplied by ``-lam`` backward."""
    return _ReverseGrad.apply(x, lam)


class Generator(nn.Module):
    """:math:`g = W h + b` (``relu=True``: :math:`\\mathrm{ReLU}(W h + b)`). Shapes: (N, hidden) -> (N, hidden)."""

    def __init__(self, hidden: int, dropout: float = 0.0, relu: bool = False):
        super().__init__()
        self.net = mlp(hidden, [hidden], None, dropout) if relu else mlp(hidden, [], hidden)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


class Discriminator(nn.Module):
    """``Linear -> LeakyReLU -> Linear`` to one logit. Shapes: (*, hidden) -> (*,)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.net = mlp(hidden, [hidden], 1, activation=nn.LeakyReLU)

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        return self.net(g).squeeze(-1)


class ModalityAdversary(nn.Module):
    """The M discriminators; :meth:`judge` scores every modality's features with every discriminator."""

    def __init__(self, n_modalities: int, hidden: int):
        super().__init__()
        if n_modalities < 2:
            raise ValueError("the adversary needs at least two modalities")
        self.discriminators = nn.ModuleList(Discriminator(hidden) for _ in range(n_modalities))

    def judge(self, generated: torch.Tensor) -> torch.Tensor:
        """Discriminator logits ``d[m, k, i] = D_m(g^k_i)``.

        Shapes: generated (M, N, hidden) -> (M, M, N).
        """
        return torch.stack([d(generated) for d in self.discriminators])

    forward = judge

    def judge_frozen(self, generated: torch.Tensor) -> torch.Tensor:
        """:meth:`judge` through detached copies of the discriminators' weights: gradients reach
        ``generated`` (the generators) but never the discriminators. Shapes as :meth:`judge`."""
        frozen = {name: p.detach() for name, p in self.named_parameters()}
        return torch.func.functional_call(self, frozen, (generated,))


def _masked_bce(logits: torch.Tensor, target: float, mask: torch.Tensor) -> torch.Tensor:
    """Mean BCE of ``logits`` (N,) against a constant target over ``mask`` (N,) bool; 0 if empty."""
    if not bool(mask.any()):
        return logits.sum() * 0.0
    z = logits[mask]
    return F.binary_cross_entropy_with_logits(z, torch.full_like(z, target))


def discriminator_loss(judged: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """:math:`\\mathcal{L}_D`. Shapes: judged (M, M, N), present (N, M) bool -> scalar."""
    n_mod = judged.shape[0]
    terms = []
    for m in range(n_mod):
        real = _masked_bce(judged[m, m], 1.0, present[:, m])
        fake = torch.stack([_masked_bce(judged[m, k], 0.0, present[:, k]) for k in range(n_mod) if k != m]).mean()
        terms.append(0.5 * (real + fake))
    return torch.stack(terms).mean()


def generator_loss(judged: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """:math:`\\mathcal{L}_G`. Shapes: judged (M, M, N), present (N, M) bool -> scalar."""
    n_mod = judged.shape[0]
    terms = [_masked_bce(judged[m, k], 1.0, present[:, k]) for m in range(n_mod) for k in range(n_mod) if k != m]
    return torch.stack(terms).mean()


def r1_penalty(judged: torch.Tensor, inputs: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """R1 gradient penalty of the discriminators on their real inputs (Mescheder et al., 2018):
    mean over present nodes of :math:`\lVert \nabla_g D_m(g^m_i) \rVert^2`.

    ``judged`` must have been computed from ``inputs`` (which requires grad); the penalty keeps
    its graph, so its gradient reaches the discriminators. Shapes: judged (M, M, N), inputs
    (M, N, hidden), present (N, M) bool -> scalar.
    """
    n_mod = judged.shape[0]
    real = torch.stack([judged[m, m][present[:, m]].sum() for m in range(n_mod)]).sum()
    (grad,) = torch.autograd.grad(real, inputs, create_graph=True)
    mask = present.t()  # (M, N)
    if not bool(mask.any()):
        return real * 0.0
    return grad.pow(2).sum(-1)[mask].mean()

"""One training step of AR-IIGCN for any adversarial schedule, with the optimizers it needs.

* ``adversarial.schedule: paper`` or ``grl`` (or no adversary): one Adam over every parameter
  (under ``paper`` the discriminators in their own group, learning rate times
  ``adversarial.d_lr_scale``); one forward, the joint loss, one backward. Under ``paper`` the discriminator loss reaches only
  the discriminators and the generator loss only the generators (detached features, frozen
  discriminators; :mod:`train.model.adversarial`); under ``grl`` the discriminator loss goes
  through gradient reversal.
* ``adversarial.schedule: alternating``: a discriminator Adam (learning rate times
  ``adversarial.d_lr_scale``) over
  :meth:`ARIIGCN.discriminator_parameters` steps first on the discriminator loss (generated
  features detached, separate forward pass), then the main Adam over every other parameter
  steps on the joint loss with the generator loss. Gradients the joint loss leaves on the
  discriminators are discarded (cleared before their next step), so they never help the
  generators.

Works with the model wrapped in DistributedDataParallel: forwards go through the wrapper (so
gradients are all-reduced), losses and parameter groups come from ``wrapper.module``. Every
forward is followed by exactly one backward, as DDP requires.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from train.batch import GraphBatch
from train.config import Config
from train.model import ARIIGCN


class Objective:
    """Owns the optimizer(s) of ``model`` (an :class:`ARIIGCN`, possibly DDP-wrapped).

    Args:
        model: the model or its DDP / DataParallel wrapper.
        cfg: the config (schedule, loss weights, ``train.grad_clip``).
        class_weights: (C,) float cross-entropy weights, or None.
        lr, weight_decay: Adam settings; default ``cfg.train.lr`` / ``cfg.train.weight_decay``.
    """

    def __init__(self, model: nn.Module, cfg: Config, class_weights: torch.Tensor | None = None,
                 lr: float | None = None, weight_decay: float | None = None):
        self.net = model
        self.model: ARIIGCN = model.module if hasattr(model, "module") else model
        self.cfg = cfg
        self.class_weights = class_weights
        self.lr = cfg.train.lr if lr is None else lr
        self.weight_decay = cfg.train.weight_decay if weight_decay is None else weight_decay
        self.grad_clip = cfg.train.grad_clip
        ac = cfg.adversarial
        self.alternating = ac.schedule == "alternating" and self.model.adversarial_active
        d_params = self.model.discriminator_parameters()
        d_lr = self.lr * (ac.d_lr_scale if ac.schedule != "grl" else 1.0)
        self.d_optimizer: torch.optim.Optimizer | None = None
        main = self.model.generator_parameters()
        if self.alternating:
            self.d_optimizer = torch.optim.Adam(d_params, lr=d_lr, weight_decay=self.weight_decay)
            groups = [{"params": main}]
        else:
            groups = [{"params": main}] + ([{"params": d_params, "lr": d_lr}] if d_params else [])
            main = main + d_params
        self.main_parameters = main
        self.optimizer = torch.optim.Adam(groups, lr=self.lr, weight_decay=self.weight_decay)

    def _clip(self, params) -> None:
        if self.grad_clip and self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)

    def step(self, batch: GraphBatch) -> dict[str, float]:
        """One optimisation step on ``batch``; returns ``loss`` (the joint total) and every term as floats.

        Under ``alternating`` the dict also has ``d_step``: the discriminator loss its own step minimised.
        """
        self.net.train()
        stats: dict[str, float] = {}
        if self.d_optimizer is not None:
            out_d = self.net(batch, discriminator_only=True)
            loss_d = self.model.discriminator_loss(out_d, batch)
            self.d_optimizer.zero_grad(set_to_none=True)
            loss_d.backward()
            self._clip(self.model.discriminator_parameters())
            self.d_optimizer.step()
            stats["d_step"] = float(loss_d.detach())

        out = self.net(batch)
        losses = self.model.losses(out, batch, self.class_weights)
        self.optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        self._clip(self.main_parameters)
        self.optimizer.step()
        stats.update({k: float(v.detach()) for k, v in losses.items()})
        stats["loss"] = stats["total"]
        return stats

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(),
                "d_optimizer": self.d_optimizer.state_dict() if self.d_optimizer is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.d_optimizer is not None:
            if state.get("d_optimizer") is None:
                raise ValueError("checkpoint has no discriminator optimizer state but the schedule is alternating")
            self.d_optimizer.load_state_dict(state["d_optimizer"])

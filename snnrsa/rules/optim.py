"""The optimiser of every rule that takes gradient steps: optimiser, per-epoch schedule and the
clipped step, built in one place from one set of keys (``schema.OptimConfig``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from snnrsa.schema import OptimConfig


class Optimiser:
    """``optimizer`` (adam | adamw | sgd) over ``params``, a ``schedule`` (cosine over ``n_epochs``, stepped
    per epoch | constant) and ``step``: clip the gradient norm to ``grad_clip`` (0: no clip), then
    update. Its ``state_dict`` keys (``opt``, ``sched``) are those the checkpoints have always
    held."""

    def __init__(self, params: Iterable[nn.Parameter], optimizer: str = "adam", lr: float = 1e-3,
                 weight_decay: float = 0.0, momentum: float = 0.9, schedule: str = "constant",
                 grad_clip: float = 0.0, n_epochs: int = 1) -> None:
        self.params = list(params)
        if optimizer == "adam":
            self.opt: torch.optim.Optimizer = torch.optim.Adam(self.params, lr=lr,
                                                               weight_decay=weight_decay)
        elif optimizer == "adamw":  # decoupled decay (Loshchilov & Hutter 2019): weights shrink
            # by lr * weight_decay per step whatever the gradient's size; Adam's coupled L2 is
            # rescaled with the gradient, so it weighs more on small-gradient layers (PC's)
            self.opt = torch.optim.AdamW(self.params, lr=lr, weight_decay=weight_decay)
        elif optimizer == "sgd":
            self.opt = torch.optim.SGD(self.params, lr=lr, momentum=momentum,
                                       weight_decay=weight_decay)
        else:
            raise ValueError(f"rule.optimizer={optimizer!r} is not one of adam, adamw, sgd")
        if schedule == "cosine":
            self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=max(n_epochs, 1))
        elif schedule == "constant":
            self.sched = None
        else:
            raise ValueError(f"rule.schedule={schedule!r} is not one of cosine, constant")
        self.grad_clip = grad_clip

    @classmethod
    def from_config(cls, cfg: OptimConfig, params: Iterable[nn.Parameter],
                    n_epochs: int) -> Optimiser:
        return cls(params, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum, cfg.schedule,
                   cfg.grad_clip, n_epochs)

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)

    def step(self) -> None:
        """Apply the gradients now in ``.grad``, their norm clipped first."""
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.opt.step()

    def minimise(self, loss: torch.Tensor) -> None:
        """One step down ``loss``: zero the gradients, backward, clipped step."""
        self.zero_grad()
        loss.backward()
        self.step()

    def end_epoch(self) -> None:
        if self.sched is not None:
            self.sched.step()

    def state_dict(self) -> dict[str, Any]:
        state = {"opt": self.opt.state_dict()}
        if self.sched is not None:
            state["sched"] = self.sched.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["opt"])
        if self.sched is not None:
            self.sched.load_state_dict(state["sched"])

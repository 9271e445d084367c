"""Backpropagation (surrogate-gradient BPTT when neurons spike), with the study's optimiser
defaults: Adam 1e-3, weight decay 1e-4, cosine schedule stepped per epoch, gradient clip 1.0."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from snnrsa.network import Network
from snnrsa.rules.base import Rule


def make_optimizer(cfg: Any, params) -> torch.optim.Optimizer:
    """``adam`` adds the L2 term to the gradient before Adam's per-weight rescaling (the study);
    ``adamw`` shrinks weights by lr * weight_decay per step beside the rescaled gradient
    (Loshchilov & Hutter 2019), so the decay's strength does not depend on the gradient's size."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    raise ValueError(f"rule.optimizer={cfg.optimizer!r} is not one of adam, adamw, sgd")


def make_scheduler(cfg: Any, opt: torch.optim.Optimizer, n_epochs: int):
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(n_epochs, 1))
    if cfg.schedule == "constant":
        return None
    raise ValueError(f"rule.schedule={cfg.schedule!r} is not one of cosine, constant")


class BP(Rule):
    """Cross-entropy on the read-out, gradients through the surrogate where neurons spike."""

    def __init__(self, cfg: Any, net: Network, n_epochs: int) -> None:
        super().__init__(cfg, net, n_epochs)
        self.opt = make_optimizer(cfg, net.parameters())
        self.sched = make_scheduler(cfg, self.opt, n_epochs)

    def train_batch(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
        logits = self.net(images)
        loss = F.cross_entropy(logits, labels)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.grad_clip)
        self.opt.step()
        correct = int((logits.argmax(1) == labels).sum())
        return loss.item() * len(labels), correct

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

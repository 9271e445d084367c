"""Backpropagation (surrogate-gradient BPTT when neurons spike), with the study's optimiser
defaults: Adam 1e-3, weight decay 1e-4, cosine schedule stepped per epoch, gradient clip 1.0."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from snnrsa.model.network import Network
from snnrsa.rules.base import Rule
from snnrsa.rules.optim import Optimiser


def supervised_step(net: Network, optim: Optimiser, images: torch.Tensor,
                    labels: torch.Tensor) -> tuple[float, int]:
    """One cross-entropy step on the read-out; (summed loss, number correct)."""
    logits = net(images)
    loss = F.cross_entropy(logits, labels)
    optim.minimise(loss)
    correct = int((logits.argmax(1) == labels).sum())
    return loss.item() * len(labels), correct


class BP(Rule):
    """Cross-entropy on the read-out, gradients through the surrogate where neurons spike."""

    def __init__(self, cfg: Any, net: Network, n_epochs: int) -> None:
        super().__init__(cfg, net, n_epochs)
        self.optim = Optimiser.from_config(cfg, net.parameters(), n_epochs)

    def train_batch(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
        return supervised_step(self.net, self.optim, images, labels)

    def end_epoch(self) -> None:
        self.optim.end_epoch()

    def state_dict(self) -> dict[str, Any]:
        return self.optim.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optim.load_state_dict(state)

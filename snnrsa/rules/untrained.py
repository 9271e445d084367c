"""The random-weights baseline: no updates, evaluated at epoch 0 only."""

from __future__ import annotations

import torch

from snnrsa.rules.base import Rule


class Untrained(Rule):
    trains = False

    def train_batch(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
        raise RuntimeError("rule=untrained makes no updates; it is evaluated at epoch 0 only")

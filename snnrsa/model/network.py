"""The full model a rule trains: encoder -> backbone -> read-out, plus feature extraction for RSA."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from snnrsa.model.backbone import Backbone, BlockSpec
from snnrsa.model.encodings import Encoder
from snnrsa.model.readouts import Readout
from snnrsa.schema import Config


def pool_conv(maps: torch.Tensor, pooling: str, grid: int) -> torch.Tensor:
    """Conv maps ``[B, C, H, W]`` as RSA features ``[B, n]`` per ``rsa.layer_pooling``: the
    channel means (gap), every unit (none), or each map averaged to ``grid`` x ``grid`` (grid)."""
    if pooling == "gap":
        return maps.mean((2, 3))
    if pooling == "grid":
        return F.adaptive_avg_pool2d(maps, grid).flatten(1)
    return maps.flatten(1)


class Network(nn.Module):
    """Images in [0, 1] -> class scores; ``features`` gives time-averaged layer activity.
    ``spec``: a rule's own blocks and input code (``snnrsa.rules.build_network`` passes the
    configured rule's); ``rule_blocks`` names the rule they were built for."""

    def __init__(self, cfg: Config, n_classes: int, spec: BlockSpec | None = None):
        super().__init__()
        encoder = Encoder(cfg.encoding, cfg.neuron.time_steps, cfg.data.mean, cfg.data.std)
        self.encoder = spec.encoder(encoder) if spec and spec.encoder else encoder
        self.backbone = Backbone(cfg.backbone, cfg.neuron, n_classes, spec)
        self.rule_blocks = spec.rule if spec else None
        self.readout = Readout(cfg.readout, cfg.neuron)
        self.layer_pooling = cfg.rsa.layer_pooling
        self.pool_grid = cfg.rsa.pool_grid

    def run(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        seq = self.encoder(images)
        head, outputs = self.backbone(seq, static=self.encoder.static)
        return self.readout(head), outputs

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.run(images)[0]

    def features(self, images: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        """Per stimulus, each layer's activity averaged over time (spike rates for LIF neurons),
        conv maps pooled per ``rsa.layer_pooling`` (``pool_conv``)."""
        _, outputs = self.run(images)
        feats = {}
        for name in layers:
            rate = outputs[name].mean(0)
            if rate.dim() == 4:
                rate = pool_conv(rate, self.layer_pooling, self.pool_grid)
            feats[name] = rate
        return feats

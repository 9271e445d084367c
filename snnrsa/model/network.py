"""The full model a rule trains: encoder -> backbone -> read-out, plus feature extraction for RSA."""

from __future__ import annotations

import torch
from torch import nn

from snnrsa.model.backbone import Backbone, BlockSpec
from snnrsa.model.encodings import Encoder
from snnrsa.model.readouts import Readout
from snnrsa.schema import Config


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

    def run(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        seq = self.encoder(images)
        head, outputs = self.backbone(seq, static=self.encoder.static)
        return self.readout(head), outputs

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.run(images)[0]

    def features(self, images: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        """Per stimulus, each layer's activity averaged over time (spike rates for LIF neurons),
        conv maps global-average-pooled or flattened per ``rsa.layer_pooling``."""
        _, outputs = self.run(images)
        feats = {}
        for name in layers:
            rate = outputs[name].mean(0)
            if rate.dim() == 4:
                rate = rate.mean((2, 3)) if self.layer_pooling == "gap" else rate.flatten(1)
            feats[name] = rate
        return feats

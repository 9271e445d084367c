"""What the greedy layer-wise STDP rules share (``rule=stdp``, ``rule=stdp_trace``): the layer in
training and the images each layer has seen, the conv weights they learn, and the read-out of
their untrained FC layers."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from snnrsa.model.backbone import fold_time
from snnrsa.model.network import Network, pool_conv
from snnrsa.rules.base import Rule


class LayerwiseSTDP(Rule):
    """Greedy layer-wise conv STDP with no class read-out of its own (accuracy: linear probe).

    FC layers are never trained by these rules and their neurons may stay silent on sparse,
    late conv spikes, so for RSA each FC layer is read out as its input current (the fixed
    random projection of the layer below, time-averaged), never as its spikes."""

    classifies = False

    def __init__(self, cfg: Any, net: Network, n_epochs: int) -> None:
        super().__init__(cfg, net, n_epochs)
        self.n_layers = len(net.backbone.blocks)
        self.layer = 0
        self.seen = [0] * self.n_layers
        self.images = 0
        self.rows: list[dict[str, Any]] = []

    @property
    def weights(self) -> list[torch.Tensor]:
        return [b.conv.weight for b in self.net.backbone.blocks]

    @property
    def done(self) -> bool:
        return self.layer >= self.n_layers

    def log_rows(self) -> list[dict[str, Any]]:
        return self.rows

    def trained_images(self, layer: str) -> int | None:
        """Training images ``conv<i>`` has learnt from; FC layers and the head: 0 (never trained)."""
        if layer.startswith("conv"):
            return self.seen[int(layer[4:]) - 1]
        return 0

    def conv_features(self, seq: torch.Tensor) -> torch.Tensor:
        """A conv block's output spikes ``[T, B, C, H, W]`` as per-unit values ``[B, C, H, W]``
        (default: time-averaged spike counts)."""
        return seq.mean(0)

    @torch.no_grad()
    def features(self, images: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        """Conv layers: ``conv_features`` of the block output, pooled as ``rsa.layer_pooling``
        says; FC layers: their input current averaged over time."""
        net, bb = self.net, self.net.backbone
        _, outputs = bb(net.encoder(images))
        feats: dict[str, torch.Tensor] = {}
        x = outputs[f"conv{len(bb.blocks)}"]
        if x.shape[-1] != bb.pool_to or x.shape[-2] != bb.pool_to:
            x = fold_time(lambda f: F.adaptive_avg_pool2d(f, bb.pool_to), x)
        x = x.flatten(2)
        for i, fc in enumerate(bb.fcs):
            outputs[f"fc{i + 1}_current"] = fold_time(fc.current, x).mean(0)
            x = outputs[f"fc{i + 1}"]
        for name in layers:
            if name.startswith("fc"):
                feats[name] = outputs[f"{name}_current"]
                continue
            rate = self.conv_features(outputs[name])
            if rate.dim() == 4:
                rate = pool_conv(rate, net.layer_pooling, net.pool_grid)
            feats[name] = rate
        return feats

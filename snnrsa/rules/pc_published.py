"""The study's predictive coding exactly as its code does it (``PC_CNN`` in the author's
``learning_rules_v7.py``), defects included (study.md, defect 3), on the shared backbone.

Per batch: a bottom-up pass gives r_1..r_N (conv, BatchNorm, ReLU, pool). Ten inference steps at
rate 0.02 then move r_l by -e_l + avgpool2(conv(e_{l-1}, W_l)) and rectify, where
e_l = r_l - tanh(upsample(ConvTranspose(r_{l+1}))) is the top-down prediction error (r_N gets only
the bottom-up term). The weight update is not PC's error x activity: for l < N, the change of r_l
from its bottom-up value, clamped to +-0.5 and averaged over batch and space, times the mean input
of layer l (the image for W_1), gives one channel x channel outer product, clamped to +-0.01 and
added at rate 1e-4 to every kernel position of W_l. W_N, the prediction weights and BatchNorm's
affine parameters never change. FC layers and head are trained with Adam 1e-3 (no weight decay,
schedule or clip) on the detached post-inference r_N, without dropout whatever
``backbone.dropout`` says (the study's PC has none). RSA features are the
post-inference r_1..r_N and the FC layers computed from r_N (``features``); class scores for
accuracy come from the same post-inference path (``predict``).

As in the study, the bottom-up pass of the update recomputes r_1..r_{N-1}, so in training mode
those BatchNorm layers update their running statistics twice per batch.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from snnrsa.model.backbone import FCLayer, fold_time
from snnrsa.model.network import Network, pool_conv
from snnrsa.rules.base import Rule
from snnrsa.rules.optim import Optimiser
from snnrsa.rules.pc import require_static_rate, to_vector
from snnrsa.schema import ConfigError


def _fc(fc: FCLayer, x: torch.Tensor) -> torch.Tensor:
    """An FC layer without its dropout."""
    return fc.neuron(fold_time(fc.linear, x))


class PCPublished(Rule):
    """Top-down ConvTranspose predictions, rank-1 spatially uniform conv updates, FC by Adam."""

    @classmethod
    def check(cls, cfg: Any) -> None:
        require_static_rate(cfg)
        if len(cfg.backbone.channels) < 2:
            raise ConfigError(f"rule=pc_published with backbone.channels="
                              f"{cfg.backbone.channels}: top-down predictions need at least 2 "
                              "conv blocks")

    def __init__(self, cfg: Any, net: Network, n_epochs: int) -> None:
        super().__init__(cfg, net, n_epochs)
        blocks = net.backbone.blocks
        device = blocks[0].conv.weight.device
        # Prediction weights: PyTorch's default init from the global generator, drawn right after
        # the network as the study draws them after its convolutions; frozen for good.
        self.predictors = nn.ModuleList(
            nn.ConvTranspose2d(upper.conv.out_channels, lower.conv.out_channels,
                               upper.conv.kernel_size, padding=upper.conv.padding, bias=False)
            for lower, upper in pairwise(blocks)
        ).to(device).requires_grad_(False)
        bb = net.backbone
        self.optim = Optimiser([*bb.fcs.parameters(), *bb.head.parameters()], "adam", cfg.fc_lr)

    def bottom_up(self, x0: torch.Tensor, depth: int | None = None) -> list[torch.Tensor]:
        """r_1..r_depth ``[B, C, H, W]`` from the encoded input ``[1, B, C, H, W]``."""
        rs, x = [], x0
        for block in self.net.backbone.blocks[:depth]:
            x = block(x)
            rs.append(x[0])
        return rs

    @torch.no_grad()
    def infer(self, rs: list[torch.Tensor]) -> list[torch.Tensor]:
        """The study's inference steps on r_1..r_N."""
        convs = [block.conv for block in self.net.backbone.blocks]
        for _ in range(self.cfg.inference_steps):
            errors = [
                r - torch.tanh(F.interpolate(pred(upper), size=r.shape[-2:], mode="nearest"))
                for r, upper, pred in zip(rs[:-1], rs[1:], self.predictors)
            ]
            new = []
            for i, r in enumerate(rs):
                dr = -errors[i] if i < len(errors) else torch.zeros_like(r)
                if i > 0:
                    conv = convs[i]
                    dr = dr + F.avg_pool2d(F.conv2d(errors[i - 1], conv.weight, None, conv.stride,
                                                    conv.padding, conv.dilation, conv.groups), 2)
                new.append(F.relu(r + self.cfg.inference_rate * dr))
            rs = new
        return rs

    @torch.no_grad()
    def conv_updates(self, x0: torch.Tensor, rs: list[torch.Tensor]) -> list[torch.Tensor]:
        """The study's update of W_1..W_{N-1} (before the rate): per layer a clamped outer
        product of mean clamped change and mean presynaptic input, the same at every kernel
        position. Recomputes the bottom-up values as the study does."""
        initial = self.bottom_up(x0, depth=len(rs) - 1)
        clamp_e, clamp_u = self.cfg.error_clamp, self.cfg.update_clamp
        updates = []
        for i, (block, r, r0) in enumerate(zip(self.net.backbone.blocks, rs, initial)):
            change = (r - r0).clamp(-clamp_e, clamp_e).mean((0, 2, 3))
            pre = (x0[0] if i == 0 else rs[i - 1]).mean((0, 2, 3))
            outer = (change[:, None] * pre[None, :])[:, :, None, None]
            updates.append(outer.expand_as(block.conv.weight).clamp(-clamp_u, clamp_u))
        return updates

    def classify(self, top: torch.Tensor) -> torch.Tensor:
        """Class scores from r_N ``[B, C, H, W]`` through the FC layers and head."""
        bb = self.net.backbone
        x = to_vector(bb, top.unsqueeze(0))
        for fc in bb.fcs:
            x = _fc(fc, x)
        return self.net.readout(fold_time(bb.head, x))

    def train_batch(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
        with torch.no_grad():
            x0 = self.net.encoder(images)
            rs = self.infer(self.bottom_up(x0))
            for block, update in zip(self.net.backbone.blocks, self.conv_updates(x0, rs)):
                block.conv.weight.add_(self.cfg.lr * update)
        logits = self.classify(rs[-1].detach())
        loss = F.cross_entropy(logits, labels)
        self.optim.minimise(loss)
        return float(loss.detach()) * len(labels), int((logits.argmax(1) == labels).sum())

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Class scores after inference, the path the FC layers are trained on."""
        return self.classify(self.infer(self.bottom_up(self.net.encoder(images)))[-1])

    def features(self, images: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        """Post-inference r_1..r_N (pooled per ``rsa.layer_pooling``) and the FC layers' activity
        computed from r_N."""
        rs = self.infer(self.bottom_up(self.net.encoder(images)))
        feats = {}
        for i, r in enumerate(rs):
            feats[f"conv{i + 1}"] = pool_conv(r, self.net.layer_pooling, self.net.pool_grid)
        x = to_vector(self.net.backbone, rs[-1].unsqueeze(0))
        for i, fc in enumerate(self.net.backbone.fcs):
            x = _fc(fc, x)
            feats[f"fc{i + 1}"] = x[0]
        return {name: feats[name] for name in layers}

    def state_dict(self) -> dict[str, Any]:
        return {**self.optim.state_dict(), "predictors": self.predictors.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optim.load_state_dict(state)
        self.predictors.load_state_dict(state["predictors"])

"""The shared conv backbone of every rule: conv blocks (conv, BatchNorm, neuron, 2x2 max-pool),
fully connected layers, and a linear head, run over T time steps.

Convolutions and linear maps are folded over time (one call on ``T * B`` frames); only the neuron
dynamics step through time, so a feed-forward network costs its convolutions plus the neuron loop.
With ``neuron=rate`` and T = 1 this is exactly a plain PyTorch CNN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from snnrsa.config import BackboneConfig, NeuronConfig
from snnrsa.neurons import make_neuron


def _fold(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a per-frame layer to a ``[T, B, ...]`` sequence in one call."""
    y = layer(x.flatten(0, 1))
    return y.unflatten(0, x.shape[:2])


def _checkpointed(block: ConvBlock, x: torch.Tensor, static: bool) -> torch.Tensor:
    """``block(x)`` under non-reentrant activation checkpointing. The recomputation in backward
    must not update BatchNorm's running statistics a second time: it runs with momentum 0
    (running stats unchanged exactly) and restores ``num_batches_tracked``."""
    calls = [0]

    def run(inp: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        bn = block.bn
        if calls[0] == 1 or not isinstance(bn, nn.BatchNorm2d):
            return block(inp, static=static)
        momentum, tracked = bn.momentum, bn.num_batches_tracked.clone()
        bn.momentum = 0.0
        try:
            return block(inp, static=static)
        finally:
            bn.momentum = momentum
            bn.num_batches_tracked.copy_(tracked)

    return torch.utils.checkpoint.checkpoint(run, x, use_reentrant=False)


class ConvBlock(nn.Module):
    """conv (no bias) -> BatchNorm -> neuron -> 2x2 max-pool."""

    def __init__(self, c_in: int, c_out: int, kernel: int, batch_norm: bool, neuron: NeuronConfig):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out) if batch_norm else nn.Identity()
        self.neuron = make_neuron(neuron)
        self.pool = nn.MaxPool2d(2)
        self.fold_bn = False

    def _conv_bn(self, f: torch.Tensor) -> torch.Tensor:
        bn = self.bn
        if (self.fold_bn and not self.training and not torch.is_grad_enabled()
                and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats):
            # eval-only: BatchNorm folded into the conv (one pass less over the largest maps)
            scale = bn.running_var.add(bn.eps).rsqrt()
            if bn.affine:
                scale = scale * bn.weight
            bias = -bn.running_mean * scale
            if bn.affine:
                bias = bias + bn.bias
            w = self.conv.weight * scale.view(-1, 1, 1, 1)
            return F.conv2d(f, w, bias, self.conv.stride, self.conv.padding)
        return bn(self.conv(f))

    def current(self, x: torch.Tensor, static: bool) -> torch.Tensor:
        """Input current ``[T, B, C, H, W]``; a static input is convolved once and repeated."""
        if static:
            cur = self._conv_bn(x[0])
            return cur.unsqueeze(0).expand(x.shape[0], *cur.shape)
        return _fold(self._conv_bn, x)

    def forward(self, x: torch.Tensor, static: bool = False) -> torch.Tensor:
        return _fold(self.pool, self.neuron(self.current(x, static)))


class FCLayer(nn.Module):
    """linear -> neuron (-> dropout)."""

    def __init__(self, n_in: int, n_out: int, neuron: NeuronConfig, dropout: float):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.neuron = make_neuron(neuron)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.neuron(_fold(self.linear, x)))


class Backbone(nn.Module):
    """Conv blocks, an adaptive pool to ``pool_to`` (for evaluation above the training size),
    fully connected layers and the linear head; returns every layer's output sequence."""

    def __init__(self, cfg: BackboneConfig, neuron: NeuronConfig, n_classes: int):
        super().__init__()
        chans = [cfg.in_channels, *cfg.channels]
        self.blocks = nn.ModuleList(
            ConvBlock(chans[i], chans[i + 1], cfg.kernel_size, cfg.batch_norm, neuron)
            for i in range(len(cfg.channels))
        )
        self.pool_to = cfg.pool_to
        units = [cfg.channels[-1] * cfg.pool_to**2, *cfg.fc_units]
        self.fcs = nn.ModuleList(
            FCLayer(units[i], units[i + 1], neuron, cfg.dropout) for i in range(len(cfg.fc_units))
        )
        self.head = nn.Linear(units[-1], n_classes)
        # no-grad evaluation only (training is never affected): channels-last frames (mkldnn's
        # faster conv layout on CPU) and BatchNorm folded into the convs; features change by
        # float rounding only (<= 1e-6 measured, tools/bench_eval.py)
        self.channels_last = True
        self.fold_bn = True
        # training-memory bound: keep only each conv block's input for backward and recompute
        # the block (conv, BN, LIF over all T, pool) during backward (one extra block forward)
        self.checkpoint_blocks = False
        if cfg.init == "kaiming_normal":
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

    @property
    def fold_bn(self) -> bool:
        """Fold BatchNorm into the convs in no-grad evaluation (on by default; features equal to
        float rounding, see tools/bench_eval.py)."""
        return all(b.fold_bn for b in self.blocks)

    @fold_bn.setter
    def fold_bn(self, value: bool) -> None:
        for b in self.blocks:
            b.fold_bn = bool(value)

    def forward(
        self, x: torch.Tensor, static: bool = False
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Head currents ``[T, B, K]`` and each named layer's output sequence ``[T, B, ...]``."""
        outputs: dict[str, torch.Tensor] = {}
        if self.channels_last and x.dim() == 5 and not self.training and not torch.is_grad_enabled():
            cl = torch.channels_last
            if static:
                x = x[0].contiguous(memory_format=cl).unsqueeze(0).expand(x.shape)
            else:
                x = x.flatten(0, 1).contiguous(memory_format=cl).unflatten(0, x.shape[:2])
        for i, block in enumerate(self.blocks):
            st = static and i == 0
            if self.checkpoint_blocks and self.training and torch.is_grad_enabled():
                x = _checkpointed(block, x, st)
            else:
                x = block(x, static=st)
            outputs[f"conv{i + 1}"] = x
        if x.shape[-1] != self.pool_to or x.shape[-2] != self.pool_to:
            x = _fold(lambda f: F.adaptive_avg_pool2d(f, self.pool_to), x)
        x = x.flatten(2)
        for i, fc in enumerate(self.fcs):
            x = fc(x)
            outputs[f"fc{i + 1}"] = x
        return _fold(self.head, x), outputs

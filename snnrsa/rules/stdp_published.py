"""The reference study's "STDP", exactly as its code does it (no spiking neurons anywhere).

Per conv layer, the channel means of the layer input and of ReLU(conv output) are squashed by a
sigmoid into rates, sampled as Poisson spikes (probability rate/steps per step) over ``steps``
steps, and the first-spike times of every (input channel, output channel) pair give
dW = A⁺·exp(−max(Δt,0)/τ⁺) − A⁻·exp(min(Δt,0)/τ⁻), Δt = t_post − t_pre, averaged over the batch,
clamped to ±clip, broadcast to every kernel position, times ``stdp_lr``; weights are clamped to
[−w_max, w_max]. As coded this *depresses* causal pairs (Δt > 0 gives A(e^{−Δt/τ} − 1) < 0);
``sign=as_printed`` flips the kernel so causal pairs are potentiated, as the paper's equation says.
Blocks run conv → ReLU → BN → ReLU → pool. FC layers, head and BN affine parameters are trained by
backprop (Adam) on a second forward pass after the STDP step, as in the study's ``step``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from snnrsa.model.backbone import BlockSpec
from snnrsa.model.network import Network
from snnrsa.rules.base import Rule
from snnrsa.rules.optim import Optimiser
from snnrsa.schema import ConfigError


class ReluBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm of ReLU(x): the study's STDP block order, keeping BatchNorm's state-dict keys."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.relu(x))


def poisson_first_spikes(rates: torch.Tensor, steps: int) -> torch.Tensor:
    """First-spike step of Bernoulli(rate/steps) trains over ``steps`` steps; steps + 1 if none
    (the study's ``poisson_spikes`` + ``first_spike``, drawing from the global RNG in its order)."""
    r = rates.clamp(0, 1).unsqueeze(-1).expand(*rates.shape, steps)
    spikes = (torch.rand_like(r) < r / steps).float()
    t = torch.argmax(spikes, dim=-1).float()
    t[~spikes.bool().any(-1)] = float(steps + 1)
    return t


def published_kernel(t_pre: torch.Tensor, t_post: torch.Tensor, cfg: Any) -> torch.Tensor:
    """dW ``[C_out, C_in]`` from first-spike times ``[B, C_in]`` and ``[B, C_out]``: the coded
    kernel, batch mean, clamp; sign flipped for ``as_printed``."""
    dt = t_post.unsqueeze(1) - t_pre.unsqueeze(2)  # [B, C_in, C_out]
    ltp = cfg.a_plus * torch.exp(-dt.clamp(min=0) / cfg.tau_plus)
    ltd = -cfg.a_minus * torch.exp(dt.clamp(max=0) / cfg.tau_minus)
    kernel = ltp + ltd if cfg.sign == "as_coded" else -(ltp + ltd)
    return kernel.mean(0).clamp(-cfg.clip, cfg.clip).T


class STDPPublished(Rule):
    """The study's approximation; reports the loss and accuracy of the BP-trained head."""

    @classmethod
    def check(cls, cfg: Any) -> None:
        """The study's rule is non-spiking and trains BN affine parameters."""
        if cfg.neuron.name != "rate":
            raise ConfigError(f"rule=stdp_published is the study's non-spiking rule: "
                              f"neuron={cfg.neuron.name}; use neuron=rate")
        if not cfg.backbone.batch_norm:
            raise ConfigError("rule=stdp_published trains BN affine parameters: "
                              "backbone.batch_norm=true")

    @classmethod
    def block_spec(cls, cfg: Any) -> BlockSpec:
        """Conv weights frozen to gradients (STDP moves them) and, with ``relu_before_bn``, the
        study's ReLU-then-BN."""

        def conv(i: int, c: nn.Conv2d) -> nn.Conv2d:
            return c.requires_grad_(False)

        def bn(i: int, c: nn.Conv2d) -> nn.Module:
            return ReluBatchNorm2d(c.out_channels)

        return BlockSpec("stdp_published", conv=conv, bn=bn if cfg.rule.relu_before_bn else None)

    def __init__(self, cfg: Any, net: Network, n_epochs: int) -> None:
        super().__init__(cfg, net, n_epochs)
        blocks = net.backbone.blocks
        affine = [p for block in blocks for p in (block.bn.weight, block.bn.bias)]
        head = [*net.backbone.fcs.parameters(), *net.backbone.head.parameters()]
        self.optim = Optimiser([*head, *affine], "adam", cfg.lr)
        self._acts: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._record = False
        for block in blocks:
            block.conv.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        if self._record:
            self._acts.append((inputs[0].mean((2, 3)), torch.relu(output).mean((2, 3))))

    @torch.no_grad()
    def stdp_step(self) -> None:
        """Apply the recorded layers' updates, in layer order (the study's RNG order)."""
        for block, (pre, post) in zip(self.net.backbone.blocks, self._acts):
            t_pre = poisson_first_spikes(torch.sigmoid(pre), self.cfg.steps)
            t_post = poisson_first_spikes(torch.sigmoid(post), self.cfg.steps)
            dw = published_kernel(t_pre, t_post, self.cfg)
            w = block.conv.weight
            w.add_(self.cfg.stdp_lr * dw[:, :, None, None].expand_as(w))
            w.clamp_(-self.cfg.w_max, self.cfg.w_max)

    def train_batch(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
        self._acts, self._record = [], True
        try:
            with torch.no_grad():
                logits = self.net(images)
        finally:
            self._record = False
        self.stdp_step()
        loss = F.cross_entropy(logits, labels)
        self.optim.minimise(F.cross_entropy(self.net(images), labels))
        return float(loss) * len(labels), int((logits.argmax(1) == labels).sum())

    def state_dict(self) -> dict[str, Any]:
        return self.optim.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optim.load_state_dict(state)

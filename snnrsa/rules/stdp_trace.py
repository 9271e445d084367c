"""Pair-based trace STDP on LIF spikes (norse ``stdp_step_conv2d``), for comparison with the
canonical first-spike rule (``rule=stdp``).

Conv layers get LIF neurons with reset (any number of spikes per image) driven by the encoder's
spikes (latency or Poisson, optional on/off DoG front end as in ``rule=stdp``); BatchNorm is
removed and conv weights live in [w_min, w_max]. Training is greedy layer-wise: for the layer in
training, every time step advances the pre/post traces and applies norse's update
(potentiation ∝ post spike × pre trace, depression ∝ post trace × pre spike; additive or
multiplicative weight dependence), divided by the number of pre/post pairs it summed (batch x
output positions: norse sums them, so without it a step grows with batch and image size; ``eta``
is a per-pair rate). With a_pre > a_post (the default) coincident pre/post spikes, the main
causal pairs under latency coding, potentiate; with a_pre = a_post they cancel.
Competition: ``none`` or ``pointwise`` (per position and step only the most depolarised
above-threshold feature spikes, and every feature there is reset).
Normalisation after each batch: ``none``, ``mean`` (each kernel's mean weight held at its initial
value) or ``l2``. Thresholds: a fraction of fan-in, or adaptive as in ``rule=stdp`` (a quantile of
the peak potentials on the first batch of the layer's training). ``STDPParameters`` is built inside
the rule (norse's parameters cannot be pickled) and never checkpointed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from snnrsa.model.backbone import BlockSpec
from snnrsa.model.network import Network
from snnrsa.rules.stdp.analysis import effective_rf, orientation_tuning
from snnrsa.rules.stdp.functional import adaptive_threshold, convergence, per_layer
from snnrsa.rules.stdp.layerwise import LayerwiseSTDP
from snnrsa.rules.stdp.modules import DoGEncoder, check_input_size
from snnrsa.rules.stdp.rule import require_spike_input


class TraceLIF(nn.Module):
    """LIF neurons with reset to zero and optional per-position competition; the threshold is a
    buffer, set from the first batch in adaptive mode (see ``rule=stdp``)."""

    spiking = True

    def __init__(self, threshold: float, beta: float, competition: str,
                 quantile: float | None) -> None:
        super().__init__()
        self.beta, self.competition, self.quantile = beta, competition, quantile
        self.register_buffer("threshold", torch.tensor(float(threshold)))
        self.register_buffer("calibrated", torch.tensor(quantile is None))

    def calibrate(self, current: torch.Tensor) -> None:
        """Threshold := quantile of the peak (reset-free) potentials of units with input."""
        if bool(self.calibrated):
            return
        v, peak = torch.zeros_like(current[0]), torch.zeros_like(current[0])
        for cur in current:
            v = self.beta * v + cur
            peak = torch.maximum(peak, v)
        self.threshold.fill_(adaptive_threshold(peak, self.quantile, float(self.threshold)))
        self.calibrated.fill_(True)

    def step(self, v: torch.Tensor, cur: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step ``[B, C, H, W]``: new potential (after reset) and spikes."""
        v = self.beta * v + cur
        above = v >= self.threshold
        if self.competition == "pointwise":
            best = torch.where(above, v, torch.full_like(v, -math.inf)).argmax(1, keepdim=True)
            win = above & (torch.arange(v.shape[1], device=v.device).view(1, -1, 1, 1) == best)
            reset = above.any(1, keepdim=True).expand_as(v)
        else:
            win = reset = above
        return v.masked_fill(reset, 0.0), win.to(v.dtype)

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        self.calibrate(current)
        v, out = torch.zeros_like(current[0]), []
        for cur in current:
            v, z = self.step(v, cur)
            out.append(z)
        return torch.stack(out)


def stdp_parameters(cfg: Any, padding: int) -> Any:
    """norse ``STDPParameters`` for a conv layer (built where used: they cannot be pickled);
    no hard bound inside norse: ``trace_stdp_layer`` clamps after dividing by the pairs."""
    from norse.torch.functional.stdp import STDPParameters

    return STDPParameters(
        a_pre=torch.tensor(cfg.a_pre), a_post=torch.tensor(cfg.a_post),
        tau_pre_inv=torch.tensor(cfg.tau_pre_inv), tau_post_inv=torch.tensor(cfg.tau_post_inv),
        w_min=cfg.w_min, w_max=cfg.w_max, eta_plus=cfg.eta_plus, eta_minus=cfg.eta_minus,
        stdp_algorithm=cfg.algorithm, mu=cfg.mu, hardbound=False, convolutional=True,
        stride=1, padding=padding)


@torch.no_grad()
def trace_stdp_layer(z_pre: torch.Tensor, conv: nn.Conv2d, neuron: TraceLIF, params: Any,
                     dt: float = 1.0) -> torch.Tensor:
    """Run one conv LIF layer over input spikes ``[T, B, C, H, W]``, updating ``conv.weight`` at
    every step with norse's trace STDP divided by the number of pre/post pairs it sums (batch ×
    output positions); returns the output spikes ``[T, B, C_out, H, W]``."""
    from norse.torch.functional.stdp import STDPState, stdp_step_conv2d

    w = conv.weight
    v = None
    state = None
    out = []
    for zp in z_pre:
        cur = nn.functional.conv2d(zp, w, padding=conv.padding)
        if v is None:
            v = torch.zeros_like(cur)
            state = STDPState(torch.zeros_like(zp), torch.zeros_like(cur))
        v, z = neuron.step(v, cur)
        new_w, state = stdp_step_conv2d(zp, z, w, state, params, dt=dt)
        pairs = z.shape[0] * z.shape[2] * z.shape[3]
        w.add_((new_w - w) / pairs).clamp_(params.w_min, params.w_max)  # bounds after the mean
        out.append(z)
    return torch.stack(out)


class STDPTrace(LayerwiseSTDP):
    """Greedy layer-wise pair-based trace STDP with norse; no class read-out of its own."""

    @classmethod
    def check(cls, cfg: Any) -> None:
        require_spike_input(cfg)
        check_input_size(cfg)

    @classmethod
    def block_spec(cls, cfg: Any) -> BlockSpec:
        """Optional DoG maps before the encoding group, conv weights drawn in [w_min, w_max] and
        frozen to gradients, no BatchNorm, ``TraceLIF`` neurons."""
        rule = cfg.rule
        adaptive = rule.threshold_mode == "adaptive"

        def encoder(code: nn.Module) -> nn.Module:
            return DoGEncoder(code, rule.dog_sigmas, rule.dog_size, rule.input_size) if rule.dog else code

        def conv(i: int, c: nn.Conv2d) -> nn.Conv2d:
            if i == 0 and rule.dog:  # on/off maps in: two input channels
                c = nn.Conv2d(2, c.out_channels, c.kernel_size, padding=c.padding, bias=False)
            with torch.no_grad():
                c.weight.normal_(rule.init_mean, rule.init_std).clamp_(rule.w_min, rule.w_max)
            return c.requires_grad_(False)

        def neuron(i: int, c: nn.Conv2d) -> nn.Module:
            fan_in = c.in_channels * c.kernel_size[0] * c.kernel_size[1]
            return TraceLIF(per_layer(rule.thresholds, i) * fan_in, rule.beta, rule.competition,
                            per_layer(rule.threshold_quantiles, i) if adaptive else None)

        return BlockSpec("stdp_trace", encoder, conv, lambda i, c: nn.Identity(), neuron)

    def __init__(self, cfg: Any, net: Network, n_epochs: int) -> None:
        super().__init__(cfg, net, n_epochs)
        self.time_steps = net.encoder.time_steps
        blocks = net.backbone.blocks
        self.target = [self._norm(b.conv.weight) for b in blocks]

    def _norm(self, w: torch.Tensor) -> torch.Tensor:
        if self.cfg.normalise == "l2":
            return w.flatten(1).norm(dim=1).clone()
        return w.flatten(1).mean(1).clone()

    @torch.no_grad()
    def layer_input(self, images: torch.Tensor, layer: int) -> torch.Tensor:
        """Spikes ``[T, B, C, H, W]`` entering conv block ``layer``."""
        x = self.net.encoder(images)
        for block in self.net.backbone.blocks[:layer]:
            z = block.neuron(block.conv(x.flatten(0, 1)).unflatten(0, x.shape[:2]))
            x = block.pool(z.flatten(0, 1)).unflatten(0, z.shape[:2])
        return x

    @torch.no_grad()
    def train_batch(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
        if self.done:
            return math.nan, 0
        layer, cfg = self.layer, self.cfg
        block = self.net.backbone.blocks[layer]
        x = self.layer_input(images, layer)
        if self.seen[layer] == 0 and cfg.threshold_mode == "adaptive":
            block.neuron.calibrated.fill_(False)
            block.neuron.calibrate(block.conv(x.flatten(0, 1)).unflatten(0, x.shape[:2]))
        w = block.conv.weight
        z = trace_stdp_layer(x, block.conv, block.neuron,
                             stdp_parameters(cfg, block.conv.padding[0]))
        if cfg.normalise != "none":
            scale = self.target[layer] / self._norm(w).clamp(min=1e-12)
            w.mul_(scale.view(-1, 1, 1, 1)).clamp_(cfg.w_min, cfg.w_max)
        n = len(images)
        self.seen[layer] += n
        self.images += n
        fired = z.sum(0) > 0
        self.rows.append({
            "images": self.images, "layer": layer, "C": convergence(w),
            "threshold": float(block.neuron.threshold), "rate": float(z.mean()),
            "silent": float((fired.sum((0, 2, 3)) == 0).float().mean()),
        })
        if self.seen[layer] >= per_layer(cfg.layer_images, layer):
            self.layer += 1
        return math.nan, 0

    def dynamics(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for i, w in enumerate(self.weights):
            flat = w.detach().double().cpu().flatten().numpy()
            out[f"conv{i + 1}_w_mean"] = np.array(flat.mean())
            out[f"conv{i + 1}_w_std"] = np.array(flat.std())
            out[f"conv{i + 1}_C"] = np.array(convergence(w.detach().double()))
        out["conv1_rf"] = effective_rf(self.weights[0]).numpy()
        out["conv1_orientation_index"] = orientation_tuning(self.weights[0])[0]
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "seen": list(self.seen), "images": self.images,
                "target": [t.clone() for t in self.target]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.layer, self.seen, self.images = state["layer"], list(state["seen"]), state["images"]
        self.target = [t.clone() for t in state["target"]]

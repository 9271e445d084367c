"""Feedback alignment (Lillicrap et al. 2016) and its sign-concordant variants on the shared backbone.

Chosen conv/linear layers keep their forward pass; their backward pass returns the exact local
weight gradient (error x presynaptic input) but sends the error downstream through a fixed random
feedback tensor B instead of W^T. Everything else is BP's training loop (optimiser, schedule,
clip), and because only the layers' backward changes, it works unchanged through surrogate-gradient
BPTT when neurons spike. The study's FA (conv layers only, xavier_normal B, SGD 5e-4) is the default.

Per epoch the rule logs, for each FA layer, the angle between W and its effective feedback and the
angle between the error signal FA delivers to the layer's output and the one BP would deliver, both
on a fixed probe batch (``log_rows``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from snnrsa.network import Network
from snnrsa.rules.base import Rule
from snnrsa.rules.bp import supervised_step
from snnrsa.rules.optim import Optimiser
from snnrsa.schema import FAConfig, allowed_values

FEEDBACK_INITS = {
    "xavier_normal": nn.init.xavier_normal_,
    "xavier_uniform": nn.init.xavier_uniform_,
    "kaiming_normal": nn.init.kaiming_normal_,
}
PROBE_SIZE = 64


class _FAConv2dFn(torch.autograd.Function):
    """conv2d whose input gradient uses ``feedback`` in place of the weight."""

    @staticmethod
    def forward(ctx, x, weight, bias, feedback, stride, padding, dilation, groups):
        ctx.save_for_backward(x, feedback)
        ctx.geometry = (weight.shape, stride, padding, dilation, groups)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad_out):
        x, feedback = ctx.saved_tensors
        shape, stride, padding, dilation, groups = ctx.geometry
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.nn.grad.conv2d_input(
                x.shape, feedback, grad_out, stride, padding, dilation, groups
            )
        if ctx.needs_input_grad[1]:
            grad_w = torch.nn.grad.conv2d_weight(
                x, shape, grad_out, stride, padding, dilation, groups
            )
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None, None, None, None


class _FALinearFn(torch.autograd.Function):
    """linear map whose input gradient uses ``feedback`` in place of the weight."""

    @staticmethod
    def forward(ctx, x, weight, bias, feedback):
        ctx.save_for_backward(x, feedback)
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        x, feedback = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_out @ feedback
        if ctx.needs_input_grad[1]:
            grad_w = grad_out.flatten(0, -2).T @ x.flatten(0, -2)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.flatten(0, -2).sum(0)
        return grad_x, grad_w, grad_b, None


def effective_feedback(kind: str, weight: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    """The tensor that replaces W in the backward pass.

    fa: the fixed random B. sign_symmetric: sign(W) at one uniform magnitude, the RMS of W
    (Liao et al. 2016, scaled so errors keep BP's size). random_magnitude_sign_of_w: |B| with the
    sign of W (fixed random magnitude, sign-concordant). The sign-concordant kinds follow W's signs
    at every step; only the magnitudes are not W's.
    """
    w = weight.detach()
    if kind == "fa":
        return fixed
    if kind == "sign_symmetric":
        return torch.sign(w) * w.pow(2).mean().sqrt()
    if kind == "random_magnitude_sign_of_w":
        return torch.sign(w) * fixed.abs()
    allowed = allowed_values(FAConfig, "feedback")
    raise ValueError(f"rule.feedback={kind!r} is not one of {list(allowed)}")


class _FAMixin:
    """Shared by the FA layer classes: ``feedback`` (the fixed B, a non-persistent buffer, so the
    network's state_dict keys stay those of a plain network), ``feedback_kind``, and ``exact``,
    which switches back to true backprop (used for the BP reference on the probe batch)."""

    feedback: torch.Tensor
    feedback_kind: str
    exact: bool
    weight: nn.Parameter

    def current_feedback(self) -> torch.Tensor:
        return effective_feedback(self.feedback_kind, self.weight, self.feedback)


class FAConv2d(_FAMixin, nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.exact:
            return super().forward(x)
        return _FAConv2dFn.apply(x, self.weight, self.bias, self.current_feedback(), self.stride,
                                 self.padding, self.dilation, self.groups)


class FALinear(_FAMixin, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.exact:
            return super().forward(x)
        return _FALinearFn.apply(x, self.weight, self.bias, self.current_feedback())


def install_feedback(layer: nn.Module, fixed: torch.Tensor, kind: str) -> None:
    """Turn an existing ``nn.Conv2d``/``nn.Linear`` into its FA class in place. Swapping the class
    (rather than wrapping) keeps the very same Parameter objects and state_dict keys, so optimisers,
    checkpoints and feature extraction see an ordinary network."""
    if isinstance(layer, nn.Conv2d):
        if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            raise ValueError("FA convolutions need numeric zero padding")
        layer.__class__ = FAConv2d
    elif isinstance(layer, nn.Linear):
        layer.__class__ = FALinear
    else:
        raise TypeError(f"cannot install feedback alignment on {type(layer).__name__}")
    layer.register_buffer("feedback", fixed.to(layer.weight), persistent=False)
    layer.feedback_kind = kind
    layer.exact = False


def fa_layers(net: Network, which: str) -> dict[str, nn.Module]:
    """The layers that use FA, by read-out name: conv1..N, and with ``all`` also fc1..M, head."""
    bb = net.backbone
    layers = {f"conv{i + 1}": block.conv for i, block in enumerate(bb.blocks)}
    if which == "all":
        layers.update({f"fc{i + 1}": fc.linear for i, fc in enumerate(bb.fcs)})
        layers["head"] = bb.head
    elif which != "conv":
        raise ValueError(f"rule.layers={which!r} is not one of {list(allowed_values(FAConfig, 'layers'))}")
    return layers


def angle(a: torch.Tensor, b: torch.Tensor) -> float:
    """Angle in degrees between two tensors taken as vectors (90 for a zero vector)."""
    a, b = a.detach().flatten().double(), b.detach().flatten().double()
    denom = a.norm() * b.norm()
    if denom == 0:
        return 90.0
    return math.degrees(math.acos(float((a @ b / denom).clamp(-1.0, 1.0))))


class FA(Rule):
    """BP's supervised step on a network whose chosen layers propagate errors through fixed B."""

    def __init__(self, cfg: Any, net: Network, n_epochs: int) -> None:
        self.layers = fa_layers(net, cfg.layers)
        # B's own stream: seeded from the run seed through SeedSequence so that it shares no random
        # bits with the weight init (which the global generator drew from the same seed).
        seed = int(np.random.SeedSequence([cfg.feedback_seed, 0xFA]).generate_state(1)[0])
        gen = torch.Generator().manual_seed(seed)
        for layer in self.layers.values():
            fixed = FEEDBACK_INITS[cfg.feedback_init](torch.empty(layer.weight.shape),
                                                      generator=gen)
            install_feedback(layer, fixed, cfg.feedback)
        super().__init__(cfg, net, n_epochs)
        self.optim = Optimiser.from_config(cfg, net.parameters(), n_epochs)
        self.epoch = 0
        self.rows: list[dict] = []
        self.probe: tuple[torch.Tensor, torch.Tensor] | None = None

    def train_batch(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
        if self.probe is None:  # the first batch, before any update, is the fixed probe
            self.probe = images[:PROBE_SIZE].clone(), labels[:PROBE_SIZE].clone()
            self._log()
        return supervised_step(self.net, self.optim, images, labels)

    def end_epoch(self) -> None:
        self.optim.end_epoch()
        self.epoch += 1
        self._log()

    def error_signals(self, exact: bool) -> dict[str, torch.Tensor]:
        """dLoss/d(output) of every FA layer on the probe batch, with FA's or with BP's backward.
        Runs in evaluation mode with a fixed random stream (no BatchNorm statistics move, dropout
        and stochastic encodings repeat), then restores every module's mode."""
        images, labels = self.probe
        outputs: dict[str, torch.Tensor] = {}
        hooks = [layer.register_forward_hook(
                     lambda _m, _i, out, name=name: outputs.__setitem__(name, out))
                 for name, layer in self.layers.items()]
        modes = {m: m.training for m in self.net.modules()}
        device = images.device
        try:
            self.net.eval()
            for layer in self.layers.values():
                layer.exact = exact
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(0)
                loss = F.cross_entropy(self.net(images), labels)
            names = list(self.layers)
            grads = torch.autograd.grad(loss, [outputs[n] for n in names])
        finally:
            for h in hooks:
                h.remove()
            for layer in self.layers.values():
                layer.exact = False
            for m, training in modes.items():
                m.training = training
        return dict(zip(names, grads))

    def _log(self) -> None:
        fa_sig, bp_sig = self.error_signals(exact=False), self.error_signals(exact=True)
        for name, layer in self.layers.items():
            self.rows.append({
                "epoch": self.epoch, "layer": name,
                "angle_w_b": angle(layer.weight, layer.current_feedback()),
                "angle_signal": angle(fa_sig[name], bp_sig[name]),
            })

    def log_rows(self) -> list[dict]:
        """Per epoch (0 = before the first update) and FA layer: the W-B alignment angle and the
        FA-vs-BP error-signal angle on the probe batch, in degrees."""
        return list(self.rows)

    def state_dict(self) -> dict[str, Any]:
        return {**self.optim.state_dict(), "epoch": self.epoch, "rows": list(self.rows),
                "probe": self.probe,
                "feedback": {n: layer.feedback.clone() for n, layer in self.layers.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optim.load_state_dict(state)
        self.epoch, self.rows, self.probe = state["epoch"], list(state["rows"]), state["probe"]
        for name, layer in self.layers.items():
            layer.feedback.copy_(state["feedback"][name])

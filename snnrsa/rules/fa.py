"""Feedback alignment (Lillicrap et al. 2016), its sign-concordant variants and direct feedback
alignment (Nøkland 2016) on the shared backbone.

FA: chosen conv/linear layers keep their forward pass; their backward pass returns the exact local
weight gradient (error x presynaptic input) but sends the error downstream through a fixed random
feedback tensor B instead of W^T. Everything else is BP's training loop (optimiser, schedule,
clip), and because only the layers' backward changes, it works unchanged through surrogate-gradient
BPTT when neurons spike. The study's FA (conv layers only, xavier_normal B, SGD 5e-4) is the default.

DFA (``rule.feedback=direct``): the output error e = dL/d(head output) reaches every chosen block
(conv block output after pooling; FC layer output) through its own fixed random matrix B_l
(classes x units) in place of the error back-propagated from above; inside the block the local
backward (pool, neuron, BatchNorm, conv) turns B_l e into the weight update. Layers not chosen
(``layers=conv``: FC layers) and the head learn by backprop.

Per epoch the rule logs, on a fixed probe batch with BatchNorm on batch statistics as in training,
the angle between the error signal each chosen layer receives and the one BP would deliver, and,
for FA layers whose B carries an error downstream (not the first layer, whose input is the image),
the angle between W and its effective feedback (``log_rows``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from snnrsa.model.network import Network
from snnrsa.rules.base import Rule, training_mode_probe
from snnrsa.rules.bp import supervised_step
from snnrsa.rules.optim import Optimiser
from snnrsa.schema import ConfigError, FAConfig, allowed_values

LAYER_SETS = allowed_values(FAConfig, "layers")
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


class _OutputError(torch.autograd.Function):
    """Identity; its backward records the output error e = dL/d(head output) for DFA."""

    @staticmethod
    def forward(ctx, x, store):
        ctx.store = store
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        ctx.store["error"] = grad
        return grad, None


class _DirectFeedback(torch.autograd.Function):
    """Identity; its backward replaces the error arriving from above with e @ B (DFA). Autograd
    reaches it only after the head, whose output it feeds, so e is recorded by then."""

    @staticmethod
    def forward(ctx, x, feedback, store):
        ctx.save_for_backward(feedback)
        ctx.store = store
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        (feedback,) = ctx.saved_tensors
        error = ctx.store["error"].reshape(-1, feedback.shape[0])  # [T * B, K]
        return (error @ feedback).view_as(grad), None, None


def fa_layers(net: Network, which: str) -> dict[str, nn.Module]:
    """The layers that use FA, by read-out name: conv1..N, and with ``all`` also fc1..M, head."""
    bb = net.backbone
    layers = {f"conv{i + 1}": block.conv for i, block in enumerate(bb.blocks)}
    if which == "all":
        layers.update({f"fc{i + 1}": fc.linear for i, fc in enumerate(bb.fcs)})
        layers["head"] = bb.head
    elif which != "conv":
        raise ValueError(f"rule.layers={which!r} is not one of {list(LAYER_SETS)}")
    return layers


def direct_layers(net: Network, which: str) -> dict[str, nn.Module]:
    """The blocks that receive the output error directly (DFA), by read-out name: conv1..N, and
    with ``all`` also fc1..M (the head's error is the output error itself)."""
    bb = net.backbone
    layers: dict[str, nn.Module] = {f"conv{i + 1}": b for i, b in enumerate(bb.blocks)}
    if which == "all":
        layers.update({f"fc{i + 1}": fc for i, fc in enumerate(bb.fcs)})
    elif which != "conv":
        raise ValueError(f"rule.layers={which!r} is not one of {list(LAYER_SETS)}")
    return layers


def angle(a: torch.Tensor, b: torch.Tensor) -> float:
    """Angle in degrees between two tensors taken as vectors (90 for a zero vector)."""
    a, b = a.detach().flatten().double(), b.detach().flatten().double()
    denom = a.norm() * b.norm()
    if denom == 0:
        return 90.0
    return math.degrees(math.acos(float((a @ b / denom).clamp(-1.0, 1.0))))


class FA(Rule):
    """BP's supervised step on a network whose chosen layers get their error through fixed B:
    from the layer above (FA and sign-concordant kinds) or from the output (DFA)."""

    @classmethod
    def check(cls, cfg: Any) -> None:
        if cfg.rule.feedback_init == "backbone" and (
                cfg.backbone.init != "study_fa" or cfg.rule.feedback == "direct"):
            raise ConfigError(
                f"rule.feedback_init=backbone with backbone.init={cfg.backbone.init} and "
                f"rule.feedback={cfg.rule.feedback}: only backbone.init=study_fa draws B (the "
                "study's FA_CNN order), and only for layer-wise feedback (not direct)")
        if cfg.rule.feedback == "direct" and cfg.backbone.time_checkpoint > 0:
            raise ConfigError("rule.feedback=direct with backbone.time_checkpoint > 0: the "
                              "chunked blocks bypass the hooks that deliver the output error; "
                              "set backbone.time_checkpoint=0")

    def __init__(self, cfg: Any, net: Network, n_epochs: int) -> None:
        self.direct = cfg.feedback == "direct"
        # B's own stream: seeded from the run seed through SeedSequence so that it shares no random
        # bits with the weight init (which the global generator drew from the same seed).
        seed = int(np.random.SeedSequence([cfg.feedback_seed, 0xFA]).generate_state(1)[0])
        self.gen = torch.Generator().manual_seed(seed)
        self.store: dict[str, torch.Tensor] = {}
        self.direct_on = True
        if self.direct:
            self.layers = direct_layers(net, cfg.layers)
            self.direct_feedback: dict[str, torch.Tensor] = {}
            for name, layer in self.layers.items():
                layer.register_forward_hook(
                    lambda _m, _i, out, name=name: self._inject(name, out))
            net.backbone.head.register_forward_hook(
                lambda _m, _i, out: self._record(out))
        else:
            self.layers = fa_layers(net, cfg.layers)
            drawn = getattr(net.backbone, "study_feedback", {})
            for name, layer in self.layers.items():
                if cfg.feedback_init == "backbone":
                    fixed = drawn[name]
                else:
                    fixed = FEEDBACK_INITS[cfg.feedback_init](torch.empty(layer.weight.shape),
                                                              generator=self.gen)
                install_feedback(layer, fixed, cfg.feedback)
        super().__init__(cfg, net, n_epochs)
        self.optim = Optimiser.from_config(cfg, net.parameters(), n_epochs)
        self.epoch = 0
        self.rows: list[dict] = []
        self.probe: tuple[torch.Tensor, torch.Tensor] | None = None

    def _active(self) -> bool:
        return self.direct_on and torch.is_grad_enabled()

    def _record(self, out: torch.Tensor) -> torch.Tensor | None:
        return _OutputError.apply(out, self.store) if self._active() else None

    def _inject(self, name: str, out: torch.Tensor) -> torch.Tensor | None:
        """DFA's hook on a chosen block: its output's error becomes e @ B_l. B_l (classes x
        units of one frame) is drawn from B's stream at the first training pass, in layer order."""
        if not self._active():
            return None
        units = math.prod(out.shape[2:])
        if name not in self.direct_feedback:
            n_classes = self.net.backbone.head.out_features
            self.direct_feedback[name] = FEEDBACK_INITS[self.cfg.feedback_init](
                torch.empty(n_classes, units), generator=self.gen).to(out)
        fixed = self.direct_feedback[name]
        if fixed.shape[1] != units:
            raise RuntimeError(f"rule.feedback=direct: {name} has {units} units per frame but "
                               f"its B was drawn for {fixed.shape[1]} (train at one image size)")
        return _DirectFeedback.apply(out, fixed, self.store)

    def set_exact(self, exact: bool) -> None:
        """True backprop everywhere (the BP reference of the diagnostics) or the rule's feedback."""
        if self.direct:
            self.direct_on = not exact
        else:
            for layer in self.layers.values():
                layer.exact = exact

    def train_batch(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
        if self.probe is None:  # the first batch, before any update, is the fixed probe
            self.probe = images[:PROBE_SIZE].clone(), labels[:PROBE_SIZE].clone()
            self._log()
        return supervised_step(self.net, self.optim, images, labels)

    def end_epoch(self) -> None:
        self.optim.end_epoch()
        self.epoch += 1
        self._log()

    def error_signals(self, exact: bool) -> tuple[dict[str, torch.Tensor], dict[str, bool]]:
        """dLoss/d(output) of every chosen layer on the probe batch, with the rule's or with
        BP's backward, as training computes it (``training_mode_probe``: batch statistics,
        dropout and stochastic encodings repeated between the two passes, nothing updated); and
        whether each layer's input carries an error downstream (its B is used)."""
        images, labels = self.probe
        outputs: dict[str, torch.Tensor] = {}
        carries: dict[str, bool] = {}

        def keep(name: str, inputs: tuple, out: torch.Tensor) -> None:
            outputs[name] = out
            carries[name] = bool(inputs and torch.is_tensor(inputs[0]) and inputs[0].requires_grad)

        hooks = [layer.register_forward_hook(
                     lambda _m, i, out, name=name: keep(name, i, out), prepend=True)
                 for name, layer in self.layers.items()]
        try:
            self.set_exact(exact)
            with training_mode_probe(self.net):
                loss = F.cross_entropy(self.net(images), labels)
                names = list(self.layers)
                grads = torch.autograd.grad(loss, [outputs[n] for n in names])
        finally:
            for h in hooks:
                h.remove()
            self.set_exact(False)
        return dict(zip(names, grads)), carries

    def _log(self) -> None:
        (fa_sig, carries), (bp_sig, _) = self.error_signals(False), self.error_signals(True)
        for name, layer in self.layers.items():
            row = {"epoch": self.epoch, "layer": name,
                   "angle_signal": angle(fa_sig[name], bp_sig[name])}
            if not self.direct and carries[name]:
                row["angle_w_b"] = angle(layer.weight, layer.current_feedback())
            self.rows.append(row)

    def log_rows(self) -> list[dict]:
        """Per epoch (0 = before the first update) and chosen layer, on the probe batch: the
        angle between the error signal the layer receives and BP's, and for FA layers whose B
        carries an error downstream, the W-B alignment angle; in degrees."""
        return list(self.rows)

    def state_dict(self) -> dict[str, Any]:
        feedback = (self.direct_feedback if self.direct
                    else {n: layer.feedback for n, layer in self.layers.items()})
        return {**self.optim.state_dict(), "epoch": self.epoch, "rows": list(self.rows),
                "probe": self.probe, "feedback": {n: b.clone() for n, b in feedback.items()},
                "gen": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optim.load_state_dict(state)
        self.epoch, self.rows, self.probe = state["epoch"], list(state["rows"]), state["probe"]
        if "gen" in state:
            self.gen.set_state(state["gen"])
        if self.direct:
            self.direct_feedback = {n: b.clone() for n, b in state["feedback"].items()}
        else:
            for name, layer in self.layers.items():
                layer.feedback.copy_(state["feedback"][name])

"""Neuron modules of the backbone, run over a whole time sequence: they own the parameters
(as buffers, so ``.to(device)`` and checkpoints carry them) and wrap the functional core.

Every neuron maps input currents ``[T, B, ...]`` to outputs ``[T, B, ...]``. The two LIF backends
share one parameterisation (beta, threshold, reset, surrogate): snntorch's ``Leaky`` is driven
directly, norse's ``LIFBoxCell`` gets ``tau_mem_inv = (1 - beta) / dt`` and its input scaled by
``1 / (dt * tau_mem_inv)``, which makes both integrate ``v <- beta * v + I`` and spike identically
(``functional``). Each LIF backend has two implementations (``impl``): ``library`` steps the
library's own cell through time (the idiomatic loop); ``fast`` (default) runs the same arithmetic
of that backend in one autograd node (``fused.FastLIF``) from the module's ``LIFParameters``.
Nothing here assumes a device: every tensor is created on the input's device.

``run(current, state)`` returns ``(outputs, state)``: a sequence run in time chunks, each chunk
from the previous one's state, gives the same spikes and gradients as one run (the fast path
differentiates through the carried membrane). ``backbone.time_checkpoint`` relies on it.
"""

from __future__ import annotations

import warnings

# snntorch 1.0 scripts a helper at import time; the deprecation notice says nothing to our users.
warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated", category=FutureWarning)

import snntorch as snn  # noqa: E402
import torch  # noqa: E402
from norse.torch import LIFBoxCell, LIFBoxParameters  # noqa: E402
from snntorch import surrogate  # noqa: E402
from torch import nn  # noqa: E402

from snnrsa.neurons import fused  # noqa: E402
from snnrsa.neurons.functional import LIFParameters  # noqa: E402
from snnrsa.neurons.fused import FastLIF  # noqa: E402
from snnrsa.schema import NeuronConfig  # noqa: E402

NORSE_DT = 1e-3
NEURON_IMPLS = ("fast", "library")


class RateNeuron(nn.Module):
    """ReLU applied at every step: the rate-coded (non-spiking) network."""

    spiking = False

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        return torch.relu(current)

    def run(self, current: torch.Tensor, state=None):
        """Stateless: ``(relu(current), None)`` (the interface of the LIF neurons)."""
        return torch.relu(current), None


def _surrogate(cfg: NeuronConfig):
    if cfg.surrogate == "atan":
        return surrogate.atan(alpha=cfg.surrogate_slope)
    return surrogate.fast_sigmoid(slope=cfg.surrogate_slope)


def _resolve_impl(cfg: NeuronConfig, impl: str | None) -> str:
    impl = impl or cfg.impl
    if impl not in NEURON_IMPLS:
        raise ValueError(f"neuron.impl={impl!r} is not one of {', '.join(NEURON_IMPLS)}")
    return impl


def pooled_spikes(neuron: nn.Module, current: torch.Tensor) -> torch.Tensor | None:
    """2x2 max-pooled spikes ``[T, B, C, H/2, W/2]`` of a fast LIF neuron from one fused CPU
    kernel; None where that does not apply (library impl, GPU, other dtypes, odd H or W), and
    the caller runs the neuron, then its pool."""
    if getattr(neuron, "impl", None) != "fast" or not hasattr(neuron, "lif_parameters"):
        return None
    return fused.pooled_spikes(current, neuron.lif_parameters(current))


class SnntorchLIF(nn.Module):
    """snntorch ``Leaky`` with explicit membrane state (never its hidden buffer, see library notes).

    ``impl='library'`` loops ``Leaky``; ``impl='fast'`` runs the same update in one fused node
    (``fused.FastLIF``) from the same ``Leaky`` buffers (beta, threshold), so checkpoints and
    ``.to(device)`` are the same for both."""

    spiking = True

    def __init__(self, cfg: NeuronConfig, impl: str | None = None) -> None:
        super().__init__()
        self.impl = _resolve_impl(cfg, impl)
        self.reset = cfg.reset
        self.surrogate = cfg.surrogate
        self.slope = float(cfg.surrogate_slope)
        self.lif = snn.Leaky(
            beta=cfg.beta,
            threshold=cfg.threshold,
            spike_grad=_surrogate(cfg),
            reset_mechanism=cfg.reset,
        )

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        return self.run(current)[0]

    def lif_parameters(self, current: torch.Tensor) -> LIFParameters:
        """The fused node's parameters in the current's dtype, from the ``Leaky`` buffers."""
        beta = self.lif.beta.clamp(0, 1).to(current.dtype)
        th = self.lif.threshold.to(current.dtype)
        one = torch.ones((), dtype=current.dtype, device=current.device)
        return LIFParameters("snntorch", beta, th, self.reset, self.surrogate, self.slope, one,
                             1.0)

    def run(self, current: torch.Tensor, state: torch.Tensor | None = None):
        """``(spikes, state)`` from ``state`` (the membrane before ``current[0]``; None = rest):
        a sequence run in time chunks, each from the last one's state, equals one run."""
        if self.impl == "fast":
            return FastLIF.apply(current, self.lif_parameters(current), state)
        mem = torch.zeros_like(current[0]) if state is None else state
        spikes = []
        for cur in current:
            spk, mem = self.lif(cur, mem)
            spikes.append(spk)
        return torch.stack(spikes), mem


class NorseLIF(nn.Module):
    """norse ``LIFBoxCell`` (current-free LIF) in the shared parameterisation.

    norse 1.1.0's SuperSpike surrogate ignores ``alpha`` and equals snntorch's fast sigmoid with
    slope 1, so that is the only surrogate accepted here (checked in ``schema.validate``).
    ``impl='fast'`` runs norse's own arithmetic (``lif_box_feed_forward_step``) in one fused node.
    """

    spiking = True

    def __init__(self, cfg: NeuronConfig, impl: str | None = None) -> None:
        super().__init__()
        self.impl = _resolve_impl(cfg, impl)
        tau_mem_inv = (1.0 - cfg.beta) / NORSE_DT
        # Buffers, so that .to(device) moves them (norse's NamedTuple parameters are not registered).
        self.register_buffer("tau_mem_inv", torch.tensor(tau_mem_inv))
        self.register_buffer("v_th", torch.tensor(cfg.threshold))
        self.input_scale = 1.0 / (NORSE_DT * tau_mem_inv) if tau_mem_inv > 0 else 1.0 / NORSE_DT

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        return self.run(current)[0]

    def lif_parameters(self, current: torch.Tensor) -> LIFParameters:
        """The fused node's parameters in the current's dtype (norse's SuperSpike surrogate is
        the slope-1 fast sigmoid; beta is unused and set to c)."""
        c = (NORSE_DT * self.tau_mem_inv).to(current.dtype)
        th = self.v_th.to(current.dtype)
        return LIFParameters("norse", c, th, "zero", "fast_sigmoid", 1.0, c, self.input_scale)

    def run(self, current: torch.Tensor, state=None):
        """``(spikes, state)`` from ``state`` (None = rest); chunked runs equal one run. The state
        is the pre-reset membrane for ``impl='fast'`` and norse's cell state for ``library``."""
        if self.impl == "fast":
            return FastLIF.apply(current, self.lif_parameters(current), state)
        params = LIFBoxParameters(
            tau_mem_inv=self.tau_mem_inv,
            v_th=self.v_th,
            v_leak=torch.zeros_like(self.v_th),
            v_reset=torch.zeros_like(self.v_th),
            method="super",
        )
        cell = LIFBoxCell(p=params, dt=NORSE_DT)
        spikes = []
        for cur in current:
            z, state = cell(cur * self.input_scale, state)
            spikes.append(z)
        return torch.stack(spikes), state


def make_neuron(cfg: NeuronConfig, impl: str | None = None) -> nn.Module:
    """The configured nonlinearity as a fresh module (one per layer: state is never shared).
    ``impl`` (fast | library) overrides ``cfg.impl`` where the config has one; default fast."""
    if cfg.name == "rate":
        return RateNeuron()
    if cfg.name == "snntorch_lif":
        return SnntorchLIF(cfg, impl)
    if cfg.name == "norse_lif":
        return NorseLIF(cfg, impl)
    raise ValueError(f"neuron.name={cfg.name!r} is not one of rate, snntorch_lif, norse_lif")

"""Neuron nonlinearities of the shared backbone, run over a whole time sequence.

Every neuron maps input currents ``[T, B, ...]`` to outputs ``[T, B, ...]``. The two LIF backends
share one parameterisation (beta, threshold, reset, surrogate): snntorch's ``Leaky`` is driven
directly, norse's ``LIFBoxCell`` gets ``tau_mem_inv = (1 - beta) / dt`` and its input scaled by
``1 / (dt * tau_mem_inv)``, which makes both integrate ``v <- beta * v + I`` and spike identically.
Their surrogate gradients differ only through the reset: snntorch subtracts a detached copy of the
previous reset, norse differentiates ``(1 - z) * v`` fully.
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

from snnrsa.config import NeuronConfig  # noqa: E402

NORSE_DT = 1e-3


class RateNeuron(nn.Module):
    """ReLU applied at every step: the rate-coded (non-spiking) network."""

    spiking = False

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        return torch.relu(current)


def _surrogate(cfg: NeuronConfig):
    if cfg.surrogate == "atan":
        return surrogate.atan(alpha=cfg.surrogate_slope)
    return surrogate.fast_sigmoid(slope=cfg.surrogate_slope)


class SnntorchLIF(nn.Module):
    """snntorch ``Leaky`` with explicit membrane state (never its hidden buffer, see library notes)."""

    spiking = True

    def __init__(self, cfg: NeuronConfig) -> None:
        super().__init__()
        self.lif = snn.Leaky(
            beta=cfg.beta,
            threshold=cfg.threshold,
            spike_grad=_surrogate(cfg),
            reset_mechanism=cfg.reset,
        )

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        mem = torch.zeros_like(current[0])
        spikes = []
        for cur in current:
            spk, mem = self.lif(cur, mem)
            spikes.append(spk)
        return torch.stack(spikes)


class NorseLIF(nn.Module):
    """norse ``LIFBoxCell`` (current-free LIF) in the shared parameterisation.

    norse 1.1.0's SuperSpike surrogate ignores ``alpha`` and equals snntorch's fast sigmoid with
    slope 1, so that is the only surrogate accepted here (checked in ``config.validate``).
    """

    spiking = True

    def __init__(self, cfg: NeuronConfig) -> None:
        super().__init__()
        tau_mem_inv = (1.0 - cfg.beta) / NORSE_DT
        # Buffers, so that .to(device) moves them (norse's NamedTuple parameters are not registered).
        self.register_buffer("tau_mem_inv", torch.tensor(tau_mem_inv))
        self.register_buffer("v_th", torch.tensor(cfg.threshold))
        self.input_scale = 1.0 / (NORSE_DT * tau_mem_inv) if tau_mem_inv > 0 else 1.0 / NORSE_DT

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        params = LIFBoxParameters(
            tau_mem_inv=self.tau_mem_inv,
            v_th=self.v_th,
            v_leak=torch.zeros_like(self.v_th),
            v_reset=torch.zeros_like(self.v_th),
            method="super",
        )
        cell = LIFBoxCell(p=params, dt=NORSE_DT)
        state = None
        spikes = []
        for cur in current:
            z, state = cell(cur * self.input_scale, state)
            spikes.append(z)
        return torch.stack(spikes)


def make_neuron(cfg: NeuronConfig) -> nn.Module:
    """The configured nonlinearity as a fresh module (one per layer: state is never shared)."""
    if cfg.name == "rate":
        return RateNeuron()
    if cfg.name == "snntorch_lif":
        return SnntorchLIF(cfg)
    if cfg.name == "norse_lif":
        return NorseLIF(cfg)
    raise ValueError(f"neuron.name={cfg.name!r} is not one of rate, snntorch_lif, norse_lif")

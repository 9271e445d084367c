"""Neuron nonlinearities of the shared backbone, run over a whole time sequence.

Every neuron maps input currents ``[T, B, ...]`` to outputs ``[T, B, ...]``. The two LIF backends
share one parameterisation (beta, threshold, reset, surrogate): snntorch's ``Leaky`` is driven
directly, norse's ``LIFBoxCell`` gets ``tau_mem_inv = (1 - beta) / dt`` and its input scaled by
``1 / (dt * tau_mem_inv)``, which makes both integrate ``v <- beta * v + I`` and spike identically.
Their surrogate gradients differ only through the reset: snntorch subtracts a detached copy of the
previous reset, norse differentiates ``(1 - z) * v`` fully.

Each LIF backend has two implementations (``impl``): ``library`` steps the library's own cell
through time (the idiomatic loop); ``fast`` (default) runs the same arithmetic of that backend,
operation for operation, in one ``autograd.Function`` over the whole time loop. Its forward uses
in-place tensor ops and saves only the membrane potentials (one float per unit and step) and the
spikes (one byte); its backward is the hand-derived BPTT of the library's graph, including the
backend's reset-gradient detail. Spikes are bit-identical to the library loop and gradients equal
to float tolerance (``tests/test_fast_lif.py``). Nothing here assumes a device: parameters are
buffers and every tensor is created on the input's device.
"""

from __future__ import annotations

import math
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
NEURON_IMPLS = ("fast", "library")


class RateNeuron(nn.Module):
    """ReLU applied at every step: the rate-coded (non-spiking) network."""

    spiking = False

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        return torch.relu(current)


def _surrogate(cfg: NeuronConfig):
    if cfg.surrogate == "atan":
        return surrogate.atan(alpha=cfg.surrogate_slope)
    return surrogate.fast_sigmoid(slope=cfg.surrogate_slope)


def _resolve_impl(cfg: NeuronConfig, impl: str | None) -> str:
    impl = impl or cfg.impl
    if impl not in NEURON_IMPLS:
        raise ValueError(f"neuron.impl={impl!r} is not one of {', '.join(NEURON_IMPLS)}")
    return impl


def _surrogate_grad_(h: torch.Tensor, kind: str, slope: float) -> torch.Tensor:
    """In place: the surrogate derivative at ``h = v - threshold`` (snntorch's / norse's formula)."""
    if kind == "atan":
        # snntorch ATan: alpha / 2 / (1 + (pi / 2 * alpha * h) ** 2)
        return h.mul_(math.pi / 2 * slope).square_().add_(1.0).reciprocal_().mul_(slope / 2)
    # snntorch FastSigmoid: 1 / (slope * |h| + 1) ** 2; norse SuperSpike is the slope-1 case
    return h.abs_().mul_(slope).add_(1.0).square_().reciprocal_()


class _FastLIF(torch.autograd.Function):
    """The whole LIF time loop of one backend as a single autograd node.

    snntorch (``Leaky``, reset_delay): ``m_t = beta * (1 - r_t) * m_{t-1} + I_t`` (zero) or
    ``beta * m_{t-1} + I_t - r_t * th`` (subtract), ``r_t = s_{t-1}`` detached, ``s_t = H(m_t - th)``.
    norse (``LIFBoxCell``, v_leak = v_reset = 0): ``x = I * scale``,
    ``u_t = v + c * ((x_t + 0) - v)``, ``z_t = H(u_t - th)``, ``v <- (1 - z_t) * u_t`` (z not detached).
    """

    @staticmethod
    def forward(ctx, current, backend, beta, th, reset, kind, slope, c, scale):
        T = current.shape[0]
        grad = ctx.needs_input_grad[0]
        spikes = torch.empty(current.shape, dtype=torch.bool, device=current.device)
        zero = torch.zeros((), dtype=current.dtype, device=current.device)
        neg_th = -th
        if grad:
            mem = torch.empty(current.shape, dtype=current.dtype, device=current.device)
        else:
            work = torch.empty((2, *current.shape[1:]), dtype=current.dtype, device=current.device)
        if backend == "snntorch":
            for t in range(T):
                m = mem[t] if grad else work[t % 2]
                if t == 0:
                    m.copy_(current[0])  # beta * 0 + I == I exactly
                else:
                    prev = mem[t - 1] if grad else work[(t - 1) % 2]
                    torch.mul(prev, beta, out=m)
                    if reset == "zero":
                        m.masked_fill_(spikes[t - 1], 0.0)
                        m.add_(current[t])
                    else:
                        m.add_(current[t])
                        m.addcmul_(spikes[t - 1].to(m.dtype), neg_th)  # m - r * th, exactly
                torch.gt(m, th, out=spikes[t])
        else:
            v = torch.zeros_like(current[0])
            d = torch.empty_like(current[0])
            for t in range(T):
                u = mem[t] if grad else work[t % 2]
                if t > 0:
                    prev = mem[t - 1] if grad else work[(t - 1) % 2]
                    torch.where(spikes[t - 1], zero, prev, out=v)
                torch.mul(current[t], scale, out=d)
                d.sub_(v).mul_(c)
                torch.add(v, d, out=u)
                torch.gt(u, th, out=spikes[t])
        out = spikes.to(current.dtype)
        if grad:
            ctx.save_for_backward(mem, spikes, beta, th, c)
            ctx.cfg = (backend, reset, kind, slope, scale)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        mem, spikes, beta, th, c = ctx.saved_tensors
        backend, reset, kind, slope, scale = ctx.cfg
        T = mem.shape[0]
        sg = _surrogate_grad_(mem - th, kind, slope)
        g = grad_out * sg  # direct path through each step's spike
        if backend == "snntorch":
            if reset == "zero":
                keep = (~spikes).to(mem.dtype).mul_(beta)  # d m_{t+1} / d m_t, reset detached
                for t in range(T - 2, -1, -1):
                    g[t].addcmul_(keep[t], g[t + 1])
            else:
                for t in range(T - 2, -1, -1):
                    g[t].addcmul_(g[t + 1], beta)  # no host sync (beta stays a device tensor)
            return g, None, None, None, None, None, None, None, None
        # norse: d u_{t+1} / d u_t = (1 - c) * ((1 - z_t) - u_t * sg_t), the reset differentiated
        k = torch.addcmul((~spikes).to(mem.dtype), mem, sg, value=-1.0).mul_(1.0 - c)
        for t in range(T - 2, -1, -1):
            g[t].addcmul_(k[t], g[t + 1])
        return g.mul_(c * scale), None, None, None, None, None, None, None, None


class SnntorchLIF(nn.Module):
    """snntorch ``Leaky`` with explicit membrane state (never its hidden buffer, see library notes).

    ``impl='library'`` loops ``Leaky``; ``impl='fast'`` runs the same update in one fused node
    (``_FastLIF``) from the same ``Leaky`` buffers (beta, threshold), so checkpoints and
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
        if self.impl == "fast":
            beta = self.lif.beta.clamp(0, 1).to(current.dtype)
            th = self.lif.threshold.to(current.dtype)
            one = torch.ones((), dtype=current.dtype, device=current.device)
            return _FastLIF.apply(current, "snntorch", beta, th, self.reset, self.surrogate,
                                  self.slope, one, 1.0)
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
        if self.impl == "fast":
            c = (NORSE_DT * self.tau_mem_inv).to(current.dtype)
            th = self.v_th.to(current.dtype)
            return _FastLIF.apply(current, "norse", c, th, "zero", "fast_sigmoid", 1.0, c,
                                  self.input_scale)
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

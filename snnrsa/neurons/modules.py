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
buffers and every tensor is created on the input's device. On CPU (float32/64) the node runs
compiled kernels (``snnrsa/_lif_cpu.py``: each unit's time loop in registers, one pass over memory
forward and one backward) equal to the tensor ops that other devices run; ``pooled_spikes`` also
folds a conv block's 2x2 max-pool into that kernel.

``run(current, state)`` returns ``(outputs, state)``: a sequence run in time chunks, each chunk
from the previous one's state, gives the same spikes and gradients as one run (the fast path
differentiates through the carried membrane). ``backbone.time_checkpoint`` relies on it.
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

from snnrsa.neurons import _cpu as _lif_cpu  # noqa: E402
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


def _surrogate_grad_(h: torch.Tensor, kind: str, slope: float) -> torch.Tensor:
    """In place: the surrogate derivative at ``h = v - threshold`` (snntorch's / norse's formula)."""
    if kind == "atan":
        # snntorch ATan: alpha / 2 / (1 + (pi / 2 * alpha * h) ** 2)
        return h.mul_(math.pi / 2 * slope).square_().add_(1.0).reciprocal_().mul_(slope / 2)
    # snntorch FastSigmoid: 1 / (slope * |h| + 1) ** 2; norse SuperSpike is the slope-1 case
    h.abs_()
    if slope != 1.0:
        h.mul_(slope)
    return h.add_(1.0).pow_(-2)  # one pass (PyTorch's pow kernel special-cases exponent -2)


def _kernel_params(backend, beta, th, reset, kind, slope, c, scale) -> _lif_cpu.LIFParams:
    """The fused nodes' arguments as the CPU kernels take them."""
    return _lif_cpu.LIFParams(backend == "norse", reset == "zero", kind == "atan", float(beta),
                              float(th), float(c), float(scale), float(slope))


class _FastLIF(torch.autograd.Function):
    """The whole LIF time loop of one backend as a single autograd node.

    snntorch (``Leaky``, reset_delay): ``m_t = beta * (1 - r_t) * m_{t-1} + I_t`` (zero) or
    ``beta * m_{t-1} + I_t - r_t * th`` (subtract), ``r_t = s_{t-1}`` detached, ``s_t = H(m_t - th)``.
    norse (``LIFBoxCell``, v_leak = v_reset = 0): ``x = I * scale``,
    ``u_t = v + c * ((x_t + 0) - v)``, ``z_t = H(u_t - th)``, ``v <- (1 - z_t) * u_t`` (z not detached).
    """

    @staticmethod
    def forward(ctx, current, backend, beta, th, reset, kind, slope, c, scale, mem0):
        """Spikes ``[T, ...]`` and the last step's membrane (the state a following chunk starts
        from); ``mem0`` (or None = rest) is the membrane of the step before ``current[0]``."""
        T = current.shape[0]
        ctx.set_materialize_grads(False)
        grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[9]
        ctx.cfg = (backend, reset, kind, slope, scale)
        ctx.compiled = _lif_cpu.supported(current)
        if ctx.compiled:
            ctx.params = _kernel_params(backend, beta, th, reset, kind, slope, c, scale)
            out, last, mem = _lif_cpu.forward(current, mem0, ctx.params, grad)
            if grad:
                ctx.save_for_backward(mem, None, beta, th, c, mem0)
            return out, last
        spikes = torch.empty(current.shape, dtype=torch.bool, device=current.device)
        zero = torch.zeros((), dtype=current.dtype, device=current.device)
        neg_th = -th
        s0 = None if mem0 is None else torch.gt(mem0, th)
        if grad:
            mem = torch.empty(current.shape, dtype=current.dtype, device=current.device)
        else:
            work = torch.empty((2, *current.shape[1:]), dtype=current.dtype, device=current.device)
        if backend == "snntorch":
            for t in range(T):
                m = mem[t] if grad else work[t % 2]
                if t == 0 and mem0 is None:
                    m.copy_(current[0])  # beta * 0 + I == I exactly
                    torch.gt(m, th, out=spikes[t])
                    continue
                if t == 0:
                    prev, prev_s = mem0, s0
                else:
                    prev, prev_s = (mem[t - 1] if grad else work[(t - 1) % 2]), spikes[t - 1]
                torch.mul(prev, beta, out=m)
                if reset == "zero":
                    m.masked_fill_(prev_s, 0.0)
                    m.add_(current[t])
                else:
                    m.add_(current[t])
                    m.addcmul_(prev_s.to(m.dtype), neg_th)  # m - r * th, exactly
                torch.gt(m, th, out=spikes[t])
        else:
            v = torch.zeros_like(current[0])
            d = torch.empty_like(current[0])
            for t in range(T):
                u = mem[t] if grad else work[t % 2]
                if t > 0:
                    prev = mem[t - 1] if grad else work[(t - 1) % 2]
                    torch.where(spikes[t - 1], zero, prev, out=v)
                elif mem0 is not None:
                    torch.where(s0, zero, mem0, out=v)
                torch.mul(current[t], scale, out=d)
                d.sub_(v).mul_(c)
                torch.add(v, d, out=u)
                torch.gt(u, th, out=spikes[t])
        out = spikes.to(current.dtype)
        last = (mem[T - 1] if grad else work[(T - 1) % 2]).clone()
        if grad:
            ctx.save_for_backward(mem, spikes, beta, th, c, mem0)
        return out, last

    @staticmethod
    def backward(ctx, grad_out, grad_last):
        mem, spikes, beta, th, c, mem0 = ctx.saved_tensors
        backend, reset, kind, slope, scale = ctx.cfg
        if ctx.compiled:
            g, g0 = _lif_cpu.backward(grad_out, mem, mem0, grad_last, ctx.params)
            return g, None, None, None, None, None, None, None, None, g0
        T = mem.shape[0]
        sg = _surrogate_grad_(mem - th, kind, slope)
        if grad_out is None:
            g = torch.zeros_like(mem)
        elif backend == "snntorch":
            g = sg.mul_(grad_out)  # direct path through each step's spike (sg not needed again)
        else:
            g = grad_out * sg
        if grad_last is not None:
            g[T - 1].add_(grad_last)  # the next chunk's dependence on this chunk's last membrane
        g0 = None
        if backend == "snntorch":
            if reset == "zero":
                zero = torch.zeros((), dtype=mem.dtype, device=mem.device)
                keep = torch.where(spikes, zero, beta)  # d m_{t+1} / d m_t, reset detached
                for t in range(T - 2, -1, -1):
                    g[t].addcmul_(keep[t], g[t + 1])
            else:
                for t in range(T - 2, -1, -1):
                    g[t].addcmul_(g[t + 1], beta)  # no host sync (beta stays a device tensor)
            if ctx.needs_input_grad[9]:
                g0 = g[0] * beta
                if reset == "zero":
                    g0.masked_fill_(torch.gt(mem0, th), 0.0)
            return g, None, None, None, None, None, None, None, None, g0
        # norse: d u_{t+1} / d u_t = (1 - c) * ((1 - z_t) - u_t * sg_t), the reset differentiated
        zero = torch.zeros((), dtype=mem.dtype, device=mem.device)
        k = torch.where(spikes, zero, 1.0 - c).addcmul_(sg.mul_(mem), c - 1.0)
        for t in range(T - 2, -1, -1):
            g[t].addcmul_(k[t], g[t + 1])
        if ctx.needs_input_grad[9]:
            sg0 = _surrogate_grad_(mem0 - th, kind, slope)
            g0 = torch.addcmul(torch.le(mem0, th).to(mem.dtype), mem0, sg0, value=-1.0)
            g0.mul_(1.0 - c).mul_(g[0])
        return g.mul_(c * scale), None, None, None, None, None, None, None, None, g0


class _FastLIFPool(torch.autograd.Function):
    """A conv block's LIF and 2x2 max-pool in one node on CPU (``_lif_cpu`` pooled kernels): the
    same pooled spikes as ``_FastLIF`` then ``nn.MaxPool2d(2)``, and the same gradients (each
    window's gradient goes to the unit PyTorch's max-pool picks), without materialising the
    full-resolution spikes or the pool's indices."""

    @staticmethod
    def forward(ctx, current, backend, beta, th, reset, kind, slope, c, scale):
        ctx.set_materialize_grads(False)
        ctx.params = _kernel_params(backend, beta, th, reset, kind, slope, c, scale)
        out, mem = _lif_cpu.pool_forward(current, ctx.params, ctx.needs_input_grad[0])
        if mem is not None:
            ctx.save_for_backward(mem)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (mem,) = ctx.saved_tensors
        g = _lif_cpu.pool_backward(grad_out, mem, ctx.params)
        return g, None, None, None, None, None, None, None, None


def pooled_spikes(neuron: nn.Module, current: torch.Tensor) -> torch.Tensor | None:
    """2x2 max-pooled spikes ``[T, B, C, H/2, W/2]`` of a fast LIF neuron from one fused CPU
    kernel; None where that does not apply (library impl, GPU, other dtypes, odd H or W), and
    the caller runs the neuron, then its pool."""
    if (getattr(neuron, "impl", None) != "fast" or not hasattr(neuron, "fused_args")
            or current.dim() != 5 or current.shape[-1] % 2 or current.shape[-2] % 2
            or not _lif_cpu.supported(current)):
        return None
    return _FastLIFPool.apply(current, *neuron.fused_args(current))


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
        return self.run(current)[0]

    def fused_args(self, current: torch.Tensor) -> tuple:
        """The fused nodes' arguments after the current (backend, beta, threshold, reset,
        surrogate, slope, c, input scale), from the ``Leaky`` buffers."""
        beta = self.lif.beta.clamp(0, 1).to(current.dtype)
        th = self.lif.threshold.to(current.dtype)
        one = torch.ones((), dtype=current.dtype, device=current.device)
        return "snntorch", beta, th, self.reset, self.surrogate, self.slope, one, 1.0

    def run(self, current: torch.Tensor, state: torch.Tensor | None = None):
        """``(spikes, state)`` from ``state`` (the membrane before ``current[0]``; None = rest):
        a sequence run in time chunks, each from the last one's state, equals one run."""
        if self.impl == "fast":
            return _FastLIF.apply(current, *self.fused_args(current), state)
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

    def fused_args(self, current: torch.Tensor) -> tuple:
        """The fused nodes' arguments after the current (see ``SnntorchLIF.fused_args``)."""
        c = (NORSE_DT * self.tau_mem_inv).to(current.dtype)
        th = self.v_th.to(current.dtype)
        return "norse", c, th, "zero", "fast_sigmoid", 1.0, c, self.input_scale

    def run(self, current: torch.Tensor, state=None):
        """``(spikes, state)`` from ``state`` (None = rest); chunked runs equal one run. The state
        is the pre-reset membrane for ``impl='fast'`` and norse's cell state for ``library``."""
        if self.impl == "fast":
            return _FastLIF.apply(current, *self.fused_args(current), state)
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

"""The LIF recurrences of snntorch and norse and their backward, as functions of one parameter
object (norse's ``functional/lif.py`` style: state in, state out; nothing here holds state).

snntorch (``Leaky``, reset_delay): ``m_t = beta * (1 - r_t) * m_{t-1} + I_t`` (zero reset) or
``beta * m_{t-1} + I_t - r_t * th`` (subtract), ``r_t = s_{t-1}`` detached, ``s_t = H(m_t - th)``.
norse (``LIFBoxCell``, v_leak = v_reset = 0): ``x = I * scale``, ``u_t = v + c * (x_t - v)``,
``z_t = H(u_t - th)``, ``v <- (1 - z_t) * u_t`` (z not detached). With ``c = dt * tau_mem_inv =
1 - beta`` and ``scale = 1 / c`` both integrate ``v <- beta * v + I`` and spike identically; their
surrogate gradients differ only through the reset (snntorch detaches it, norse differentiates it).

The state between steps is the last step's (pre-reset) membrane and its spikes. These tensor ops
are the path of every device; on CPU the fused node runs ``_cpu``'s compiled kernels, which repeat
them operation for operation. Steps write into ``out`` where given (the sequence's saved
membranes), so a time loop allocates nothing per step.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch


class LIFParameters(NamedTuple):
    """One LIF neuron in both backends' terms (tensors in the input's dtype and device)."""

    backend: str  # "snntorch" | "norse": whose update and reset gradient
    beta: torch.Tensor  # snntorch's decay per step (norse: c, unused)
    threshold: torch.Tensor
    reset: str  # "zero" | "subtract" (norse: zero)
    surrogate: str  # "atan" | "fast_sigmoid" (norse: fast_sigmoid, slope 1 = SuperSpike)
    slope: float
    c: torch.Tensor  # norse: dt * tau_mem_inv (snntorch: 1)
    scale: float  # norse's input scale 1 / (dt * tau_mem_inv) (snntorch: 1)


def surrogate_grad_(h: torch.Tensor, kind: str, slope: float) -> torch.Tensor:
    """In place: the surrogate derivative at ``h = v - threshold`` (snntorch's / norse's formula)."""
    if kind == "atan":
        # snntorch ATan: alpha / 2 / (1 + (pi / 2 * alpha * h) ** 2)
        return h.mul_(math.pi / 2 * slope).square_().add_(1.0).reciprocal_().mul_(slope / 2)
    # snntorch FastSigmoid: 1 / (slope * |h| + 1) ** 2; norse SuperSpike is the slope-1 case
    h.abs_()
    if slope != 1.0:
        h.mul_(slope)
    return h.add_(1.0).pow_(-2)  # one pass (PyTorch's pow kernel special-cases exponent -2)


def snntorch_step(current: torch.Tensor, mem: torch.Tensor | None, spiked: torch.Tensor | None,
                  p: LIFParameters, out: torch.Tensor | None = None) -> torch.Tensor:
    """The membrane after one snntorch ``Leaky`` step from the last step's membrane and spikes
    (None = rest)."""
    if mem is None:
        return current.clone() if out is None else out.copy_(current)  # beta * 0 + I == I exactly
    m = torch.mul(mem, p.beta, out=out)
    if p.reset == "zero":
        return m.masked_fill_(spiked, 0.0).add_(current)
    return m.add_(current).addcmul_(spiked.to(m.dtype), -p.threshold)  # m - r * th, exactly


def norse_step(current: torch.Tensor, mem: torch.Tensor | None, spiked: torch.Tensor | None,
               p: LIFParameters, out: torch.Tensor | None = None) -> torch.Tensor:
    """The membrane after one norse ``lif_box_feed_forward_step`` (v_leak = v_reset = 0) from the
    last step's pre-reset membrane and spikes (None = rest)."""
    v = torch.zeros_like(current) if mem is None else torch.where(spiked, 0.0, mem)
    d = torch.mul(current, p.scale).sub_(v).mul_(p.c)
    return torch.add(v, d, out=out)


def lif_step(current: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None,
             p: LIFParameters, out: torch.Tensor | None = None):
    """``(spikes, (membrane, spikes))``: one step of ``p.backend`` from ``state`` (None = rest)."""
    mem, spiked = (None, None) if state is None else state
    step = snntorch_step if p.backend == "snntorch" else norse_step
    m = step(current, mem, spiked, p, out)
    s = torch.gt(m, p.threshold)
    return s, (m, s)


def lif_sequence(current: torch.Tensor, mem0: torch.Tensor | None, p: LIFParameters,
                 store: bool):
    """Spikes ``[T, ...]`` (bool), the last step's membrane and, if ``store``, every step's
    membrane ``[T, ...]`` (else None), from ``mem0`` (the membrane before ``current[0]``; None =
    rest)."""
    T = current.shape[0]
    spikes = torch.empty(current.shape, dtype=torch.bool, device=current.device)
    mem = (torch.empty(current.shape, dtype=current.dtype, device=current.device) if store
           else torch.empty((2, *current.shape[1:]), dtype=current.dtype, device=current.device))
    state = None if mem0 is None else (mem0, torch.gt(mem0, p.threshold))
    for t in range(T):
        s, state = lif_step(current[t], state, p, out=mem[t if store else t % 2])
        spikes[t] = s
    return spikes, state[0].clone(), (mem if store else None)


def lif_sequence_backward(grad_out: torch.Tensor | None, grad_last: torch.Tensor | None,
                          mem: torch.Tensor, spikes: torch.Tensor, mem0: torch.Tensor | None,
                          p: LIFParameters, need_mem0: bool):
    """BPTT of ``lif_sequence``: dL/dcurrent ``[T, ...]`` and dL/dmem0 (None unless
    ``need_mem0``), from dL/dspikes and dL/d(last membrane) (either None = 0)."""
    T = mem.shape[0]
    sg = surrogate_grad_(mem - p.threshold, p.surrogate, p.slope)
    if grad_out is None:
        g = torch.zeros_like(mem)
    elif p.backend == "snntorch":
        g = sg.mul_(grad_out)  # direct path through each step's spike (sg not needed again)
    else:
        g = grad_out * sg
    if grad_last is not None:
        g[T - 1].add_(grad_last)  # the next chunk's dependence on this chunk's last membrane
    if p.backend == "snntorch":
        return _snntorch_carry(g, spikes, mem0, p, need_mem0)
    return _norse_carry(g, sg, mem, spikes, mem0, p, need_mem0)


def _snntorch_carry(g, spikes, mem0, p: LIFParameters, need_mem0: bool):
    """snntorch: d m_{t+1} / d m_t = beta (subtract) or beta (1 - s_t) (zero, reset detached)."""
    T = g.shape[0]
    if p.reset == "zero":
        zero = torch.zeros((), dtype=g.dtype, device=g.device)
        keep = torch.where(spikes, zero, p.beta)
        for t in range(T - 2, -1, -1):
            g[t].addcmul_(keep[t], g[t + 1])
    else:
        for t in range(T - 2, -1, -1):
            g[t].addcmul_(g[t + 1], p.beta)  # no host sync (beta stays a device tensor)
    g0 = None
    if need_mem0:
        g0 = g[0] * p.beta
        if p.reset == "zero":
            g0.masked_fill_(torch.gt(mem0, p.threshold), 0.0)
    return g, g0


def _norse_carry(g, sg, mem, spikes, mem0, p: LIFParameters, need_mem0: bool):
    """norse: d u_{t+1} / d u_t = (1 - c) * ((1 - z_t) - u_t * sg_t), the reset differentiated."""
    T = g.shape[0]
    zero = torch.zeros((), dtype=mem.dtype, device=mem.device)
    k = torch.where(spikes, zero, 1.0 - p.c).addcmul_(sg.mul_(mem), p.c - 1.0)
    for t in range(T - 2, -1, -1):
        g[t].addcmul_(k[t], g[t + 1])
    g0 = None
    if need_mem0:
        sg0 = surrogate_grad_(mem0 - p.threshold, p.surrogate, p.slope)
        g0 = torch.addcmul(torch.le(mem0, p.threshold).to(mem.dtype), mem0, sg0, value=-1.0)
        g0.mul_(1.0 - p.c).mul_(g[0])
    return g.mul_(p.c * p.scale), g0

"""The fused LIF: a whole time loop as one autograd node (``impl='fast'``).

Its forward saves only the membrane potentials (one float per unit and step) and, on the tensor
path, the spikes (one byte); its backward is the hand-derived BPTT of the library's graph,
including the backend's reset-gradient detail (``functional.lif_sequence_backward``). On CPU
(float32/64) the node runs ``_cpu``'s compiled kernels, equal to the tensor ops other devices run;
``FastLIFPool`` also folds a conv block's 2x2 max-pool into the kernel. Spikes are bit-identical to
the library loop and gradients equal to float tolerance (``tests/neurons/test_fast_lif.py``).
"""

from __future__ import annotations

import torch

from snnrsa.neurons import _cpu
from snnrsa.neurons.functional import LIFParameters, lif_sequence, lif_sequence_backward


class FastLIF(torch.autograd.Function):
    """``apply(current, p, mem0)``: spikes ``[T, ...]`` and the last step's membrane (the state a
    following chunk starts from); ``mem0`` (or None = rest) is the membrane of the step before
    ``current[0]``."""

    @staticmethod
    def forward(ctx, current: torch.Tensor, p: LIFParameters, mem0: torch.Tensor | None):
        ctx.set_materialize_grads(False)
        grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[2]
        ctx.p = p
        ctx.compiled = _cpu.supported(current)
        if ctx.compiled:
            out, last, mem = _cpu.forward(current, mem0, p, grad)
            if grad:
                ctx.save_for_backward(mem, None, mem0)
            return out, last
        spikes, last, mem = lif_sequence(current, mem0, p, grad)
        if grad:
            ctx.save_for_backward(mem, spikes, mem0)
        return spikes.to(current.dtype), last

    @staticmethod
    def backward(ctx, grad_out, grad_last):
        mem, spikes, mem0 = ctx.saved_tensors
        if ctx.compiled:
            g, g0 = _cpu.backward(grad_out, mem, mem0, grad_last, ctx.p)
        else:
            g, g0 = lif_sequence_backward(grad_out, grad_last, mem, spikes, mem0, ctx.p,
                                          ctx.needs_input_grad[2])
        return g, None, g0


class FastLIFPool(torch.autograd.Function):
    """``apply(current, p)``: a conv block's LIF and 2x2 max-pool in one node on CPU (``_cpu``'s
    pooled kernels): the same pooled spikes as ``FastLIF`` then ``nn.MaxPool2d(2)``, and the same
    gradients (each window's gradient goes to the unit PyTorch's max-pool picks), without
    materialising the full-resolution spikes or the pool's indices."""

    @staticmethod
    def forward(ctx, current: torch.Tensor, p: LIFParameters):
        ctx.set_materialize_grads(False)
        ctx.p = p
        out, mem = _cpu.pool_forward(current, p, ctx.needs_input_grad[0])
        if mem is not None:
            ctx.save_for_backward(mem)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (mem,) = ctx.saved_tensors
        return _cpu.pool_backward(grad_out, mem, ctx.p), None


def pooled_spikes(current: torch.Tensor, p: LIFParameters) -> torch.Tensor | None:
    """2x2 max-pooled spikes ``[T, B, C, H/2, W/2]`` from one fused CPU kernel; None where that
    does not apply (GPU, other dtypes, odd H or W), and the caller runs the neuron, then its
    pool."""
    if (current.dim() != 5 or current.shape[-1] % 2 or current.shape[-2] % 2
            or not _cpu.supported(current)):
        return None
    return FastLIFPool.apply(current, p)

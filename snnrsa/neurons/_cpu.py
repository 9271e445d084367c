"""The fused LIF's compiled CPU path: lays tensors out for the numba kernels (``_cpu_kernels``)
and runs them on threads over contiguous unit ranges.

Inputs are read in the memory order they lie in (channels-last frames at evaluation stay so);
outputs come back in that layout. Used for float32/float64 CPU tensors (``supported``); other
devices and dtypes take the tensor path of ``functional``. Every function takes the one
``LIFParameters`` object of the neuron.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from snnrsa.neurons._cpu_kernels import (
    BLOCK,
    lif_backward,
    lif_forward,
    lif_pool_backward,
    lif_pool_forward,
)
from snnrsa.neurons.functional import LIFParameters

_POOL: tuple[int, ThreadPoolExecutor] | None = None  # (owning process id, pool): not across fork


def supported(x: torch.Tensor) -> bool:
    """Whether the compiled kernels take this input: float32/64 CPU tensors."""
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)


def _order(x: torch.Tensor) -> list[int]:
    """Dimension order, time first, in which ``x``'s memory is contiguous (e.g. channels-last
    frames at evaluation), so the elementwise kernels run on its memory as it lies; row-major
    when there is none (then inputs are copied)."""
    perm = [0, *sorted(range(1, x.dim()), key=lambda d: -x.stride(d))]
    return perm if x.permute(perm).is_contiguous() else list(range(x.dim()))


def _flat(x: torch.Tensor, perm: list[int], rows: int) -> torch.Tensor:
    """``[rows, N]`` view (a copy if needed) of ``x``'s elements in ``perm`` order."""
    return x.permute(perm).contiguous().view(rows, -1)


def _new(shape: torch.Size, perm: list[int], dtype: torch.dtype) -> torch.Tensor:
    """An empty tensor of ``shape`` whose memory is contiguous in ``perm`` order."""
    inv = sorted(range(len(perm)), key=perm.__getitem__)
    return torch.empty([shape[p] for p in perm], dtype=dtype).permute(inv)


def _threads(n: int, block: int) -> list[tuple[int, int]]:
    """Block-aligned ranges of ``n`` items, one per torch thread (none under 8 blocks)."""
    k = max(1, min(torch.get_num_threads(), n // (8 * block)))
    edges = [round(n * i / k / block) * block for i in range(k)] + [n]
    return [(lo, hi) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]


def _run(kernel, n: int, block: int, *args) -> None:
    """``kernel(*arrays, lo, hi, *flags)`` over thread ranges of ``n`` items (units, or row pairs
    for the pooled kernels) taken ``block`` at a time."""
    global _POOL
    ranges = _threads(n, block)
    if len(ranges) == 1:
        kernel(*args[:-1], 0, n, *args[-1])
        return
    if _POOL is None or _POOL[0] != os.getpid() or _POOL[1]._max_workers < len(ranges):
        _POOL = (os.getpid(), ThreadPoolExecutor(max(len(ranges), os.cpu_count() or 1)))
    futures = [_POOL[1].submit(kernel, *args[:-1], lo, hi, *args[-1]) for lo, hi in ranges]
    for f in futures:
        f.result()


def constants(p: LIFParameters, dtype: np.dtype) -> np.ndarray:
    """The kernels' constants ``k`` in the data type (a float64 literal would promote float32
    arithmetic): beta, th, c, scale, 0, 1, slope, pi / 2 * slope, slope / 2."""
    values = (float(p.beta), float(p.threshold), float(p.c), float(p.scale), 0.0, 1.0,
              float(p.slope), math.pi / 2 * p.slope, p.slope / 2)
    return np.array(values, dtype=dtype)


def _flags(p: LIFParameters) -> tuple[bool, bool, bool]:
    """(norse's update and reset gradient, zero reset, ATan surrogate) as the kernels take them."""
    return p.backend == "norse", p.reset == "zero", p.surrogate == "atan"


def _frames(current: torch.Tensor) -> torch.Tensor:
    """The input to read: a static input (time stride 0) as its one frame."""
    x = current.detach()
    return x[:1] if x.shape[0] > 1 and x.stride(0) == 0 else x


def forward(current: torch.Tensor, mem0: torch.Tensor | None, p: LIFParameters, store: bool):
    """Spikes ``[T, ...]`` (current's dtype and memory layout), the last step's membrane and, if
    ``store``, every step's membrane ``[T, ...]`` (else None)."""
    T, dtype = current.shape[0], current.dtype
    x = _frames(current)
    perm = _order(x)
    step = [d - 1 for d in perm[1:]]
    cur = _flat(x, perm, x.shape[0])
    n = cur.shape[1]
    out = _new(current.shape, perm, dtype)
    mem = _new(current.shape, perm, dtype) if store else None
    last = _new(current.shape[1:], step, dtype)
    m0 = torch.empty((1, 0), dtype=dtype) if mem0 is None else _flat(mem0.detach(), step, 1)
    _run(lif_forward, n, BLOCK, cur.numpy(), m0[0].numpy(), _flat(out, perm, T).numpy(),
         (_flat(mem, perm, T) if store else torch.empty((0, n), dtype=dtype)).numpy(),
         _flat(last, step, 1)[0].numpy(),
         (*_flags(p)[:2], constants(p, cur.numpy().dtype)))
    return out, last, mem


def backward(grad_out: torch.Tensor | None, mem: torch.Tensor, mem0: torch.Tensor | None,
             grad_last: torch.Tensor | None, p: LIFParameters):
    """dL/dcurrent ``[T, ...]`` (in ``mem``'s layout) and dL/dmem0 (None without ``mem0``)."""
    T, dtype = mem.shape[0], mem.dtype
    perm = _order(mem)
    step = [d - 1 for d in perm[1:]]
    m = _flat(mem, perm, T)
    n = m.shape[1]
    go = torch.zeros((1, n), dtype=dtype) if grad_out is None else _flat(grad_out, perm, T)
    gl = torch.zeros((1, n), dtype=dtype) if grad_last is None else _flat(grad_last, step, 1)
    m0 = torch.empty((1, 0), dtype=dtype) if mem0 is None else _flat(mem0.detach(), step, 1)
    g = _new(mem.shape, perm, dtype)
    g0 = _new(mem0.shape, step, dtype) if mem0 is not None else torch.empty((1, 0), dtype=dtype)
    _run(lif_backward, n, BLOCK, go.numpy(), m.numpy(), m0[0].numpy(), gl[0].numpy(),
         _flat(g, perm, T).numpy(), (g0 if mem0 is None else _flat(g0, step, 1))[0].numpy(),
         (*_flags(p), constants(p, m.numpy().dtype)))
    return g, (g0 if mem0 is not None else None)


def _pool_layout(x: torch.Tensor) -> tuple[list[int], int, int]:
    """For ``[T, B, C, H, W]``: the dimension order of its memory (NCHW or channels-last frames;
    others are copied to NCHW) as ``[P.., H, W, Q..]``, and P (frames' outer units) and Q."""
    T, B, C, H, W = x.shape
    cl = [0, 1, 3, 4, 2]
    if not x.is_contiguous() and x.permute(cl).is_contiguous():
        return cl, B, C
    return [0, 1, 2, 3, 4], B * C, 1


def pool_forward(current: torch.Tensor, p: LIFParameters, store: bool):
    """2x2 max-pooled spikes ``[T, B, C, H/2, W/2]`` (H, W even) in the input's frame layout and,
    if ``store``, the membranes ``[T, B, C, H, W]`` (else None)."""
    T, dtype = current.shape[0], current.dtype
    x = _frames(current)
    perm, P, Q = _pool_layout(x)
    _, B, C, H, W = current.shape
    cur = _flat(x, perm, x.shape[0])
    out = _new(torch.Size((T, B, C, H // 2, W // 2)), perm, dtype)
    mem = _new(current.shape, perm, dtype) if store else None
    L = 2 * W * Q
    _run(lif_pool_forward, P * H // 2, max(1, BLOCK // L), cur.numpy(),
         _flat(out, perm, T).numpy(),
         (_flat(mem, perm, T) if store else torch.empty((0, 1), dtype=dtype)).numpy(),
         (W, Q, *_flags(p)[:2], constants(p, cur.numpy().dtype)))
    return out, mem


def pool_backward(grad_out: torch.Tensor | None, mem: torch.Tensor, p: LIFParameters):
    """dL/dcurrent ``[T, B, C, H, W]`` (in ``mem``'s layout) from dL/d(pooled spikes)."""
    T, dtype = mem.shape[0], mem.dtype
    perm, P, Q = _pool_layout(mem)
    _, B, C, H, W = mem.shape
    m = _flat(mem, perm, T)
    go = (torch.zeros((1, P * H // 2 * W // 2 * Q), dtype=dtype) if grad_out is None
          else _flat(grad_out, perm, T))
    g = _new(mem.shape, perm, dtype)
    L = 2 * W * Q
    _run(lif_pool_backward, P * H // 2, max(1, BLOCK // L), go.numpy(), m.numpy(),
         _flat(g, perm, T).numpy(),
         (W, Q, *_flags(p), constants(p, m.numpy().dtype)))
    return g

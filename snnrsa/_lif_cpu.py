"""Compiled CPU kernels of the fused LIF (``neurons._FastLIF``): the whole time loop in one pass.

On CPU the per-step tensor ops of the fused LIF each stream the full ``[B, C, H, W]`` map through
memory (forward: ~5 passes per step; backward: the surrogate, the keep factors and one pass per
step), which costs about as much as the convolutions themselves. Here every unit's time loop runs
in registers, ``BLOCK`` units at a time (the inner loop over units vectorises), so each input,
output and saved membrane is touched once. Threads take contiguous unit ranges (the kernels
release the GIL).

The forward repeats the tensor path's operations one for one in the data type (same products,
sums and comparisons, no fused multiply-add), so spikes and membranes equal it exactly (a zero's
sign aside); the backward is the same recurrence (float tolerance). Constants arrive in an array
of the data type, so that no float32 operation is promoted to float64. Used for float32/float64
CPU tensors; other devices and dtypes take the tensor-op path in ``neurons``.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch

BLOCK = 512  # units per inner loop: a block's state stays in L1
_POOL: tuple[int, ThreadPoolExecutor] | None = None  # (owning process id, pool): not across fork


@numba.njit(nogil=True, cache=True)
def lif_forward(cur, mem0, out, mem, last, lo, hi, norse, zero_reset, k):
    """Spikes ``out[t, i]`` (0/1) for units ``lo..hi``; ``mem[t, i]`` = membrane when ``mem`` has
    T rows (training), nothing when it has none; ``last`` = the last step's membrane. ``cur`` has
    T rows, or 1 (static input). ``mem0``: membrane before step 0 (length N), or empty = rest.

    The membrane at rest is 0, which makes step 0 the general update (beta * 0 + I = I and
    0 + c * (I * scale - 0) = c * (I * scale) exactly; thresholds are > 0, so rest never fired). Variant branches sit outside the loops
    over units, so each of those is branch-free and vectorises."""
    T = out.shape[0]
    b, h, c, s, zero, one = k[0], k[1], k[2], k[3], k[4], k[5]
    v = np.empty(BLOCK, out.dtype)
    for b0 in range(lo, hi, BLOCK):
        n = min(BLOCK, hi - b0)
        vb = v[:n]
        if mem0.shape[0] == 0:
            vb[:] = zero
        else:
            vb[:] = mem0[b0:b0 + n]
        for t in range(T):
            x = cur[0 if cur.shape[0] == 1 else t, b0:b0 + n]
            o = out[t, b0:b0 + n]
            if norse:  # v <- (1 - z) u; u = v + c * (I * scale - v)
                for j in range(n):
                    q = zero if vb[j] > h else vb[j]
                    m = q + ((x[j] * s) - q) * c
                    vb[j] = m
                    o[j] = one if m > h else zero
            elif zero_reset:  # m = beta * (1 - r) * m + I, r = last step's spike
                for j in range(n):
                    m = (zero if vb[j] > h else vb[j] * b) + x[j]
                    vb[j] = m
                    o[j] = one if m > h else zero
            else:  # m = beta * m + I - r * th
                for j in range(n):
                    m = vb[j] * b + x[j]
                    m = m - h if vb[j] > h else m
                    vb[j] = m
                    o[j] = one if m > h else zero
            if mem.shape[0] == T:
                mem[t, b0:b0 + n] = vb
        last[b0:b0 + n] = vb


@numba.njit(nogil=True, cache=True)
def lif_backward(go, mem, mem0, glast, g, g0, lo, hi, norse, zero_reset, atan, k):
    """BPTT of ``lif_forward`` for units ``lo..hi``: ``g`` = dL/dcurrent ``[T, N]``, ``g0`` =
    dL/dmem0 when ``mem0`` is given (else empty). ``go``: dL/dspikes (T rows, or one zero row);
    ``glast``: dL/d(last membrane) (length N). The tensor path's recurrence: g_t = sg_t go_t +
    k_t g_{t+1}, with k_t = beta (1 - s_t) (snntorch zero reset, the reset detached), beta
    (subtract), or (1 - c)(1 - s_t) - (1 - c) sg_t u_t (norse, the reset differentiated)."""
    T = mem.shape[0]
    b, h, c, s, zero, one, a, p1, p2 = k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7], k[8]
    out_scale = c * s if norse else one
    omc, cm1 = one - c, c - one
    acc = np.empty(BLOCK, g.dtype)
    sgb = np.empty(BLOCK, g.dtype)
    for b0 in range(lo, hi, BLOCK):
        n = min(BLOCK, hi - b0)
        ab, sb = acc[:n], sgb[:n]
        ab[:] = glast[b0:b0 + n]
        for t in range(T - 1, -1, -1):
            m = mem[t, b0:b0 + n]
            gi = go[0 if go.shape[0] == 1 else t, b0:b0 + n]
            if atan:  # snntorch ATan: alpha / 2 / (1 + (pi / 2 * alpha * h) ** 2)
                for j in range(n):
                    e = (m[j] - h) * p1
                    sb[j] = (one / (e * e + one)) * p2
            else:  # fast sigmoid: 1 / (slope * |h| + 1) ** 2
                for j in range(n):
                    e = abs(m[j] - h) * a + one
                    sb[j] = one / (e * e)
            if t == T - 1:
                for j in range(n):
                    ab[j] = sb[j] * gi[j] + ab[j]
            elif norse:
                for j in range(n):
                    kt = (zero if m[j] > h else omc) + (sb[j] * m[j]) * cm1
                    ab[j] = sb[j] * gi[j] + kt * ab[j]
            elif zero_reset:
                for j in range(n):
                    ab[j] = sb[j] * gi[j] + (zero if m[j] > h else b) * ab[j]
            else:
                for j in range(n):
                    ab[j] = sb[j] * gi[j] + b * ab[j]
            gt = g[t, b0:b0 + n]
            for j in range(n):
                gt[j] = ab[j] * out_scale
        if mem0.shape[0] > 0:
            m0 = mem0[b0:b0 + n]
            g0b = g0[b0:b0 + n]
            if norse:  # norse's SuperSpike (slope 1) at the carried membrane
                for j in range(n):
                    e = abs(m0[j] - h) + one
                    keep = (one if m0[j] <= h else zero) - m0[j] * (one / (e * e))
                    g0b[j] = keep * omc * ab[j]
            elif zero_reset:
                for j in range(n):
                    g0b[j] = (zero if m0[j] > h else b) * ab[j]
            else:
                for j in range(n):
                    g0b[j] = ab[j] * b


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


def _threads(n: int) -> list[tuple[int, int]]:
    """Block-aligned unit ranges, one per torch thread (none smaller than 8 blocks)."""
    k = max(1, min(torch.get_num_threads(), n // (8 * BLOCK)))
    edges = [round(n * i / k / BLOCK) * BLOCK for i in range(k)] + [n]
    return [(lo, hi) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]


def _run(kernel, n: int, *args) -> None:
    """``kernel(*arrays, lo, hi, *flags)`` over thread ranges of the ``n`` units."""
    global _POOL
    ranges = _threads(n)
    if len(ranges) == 1:
        kernel(*args[:-1], 0, n, *args[-1])
        return
    if _POOL is None or _POOL[0] != os.getpid() or _POOL[1]._max_workers < len(ranges):
        _POOL = (os.getpid(), ThreadPoolExecutor(max(len(ranges), os.cpu_count() or 1)))
    futures = [_POOL[1].submit(kernel, *args[:-1], lo, hi, *args[-1]) for lo, hi in ranges]
    for f in futures:
        f.result()


def _consts(dtype: np.dtype, *values: float) -> np.ndarray:
    """Kernel constants in the data type (a float64 literal would promote float32 arithmetic)."""
    return np.array([float(v) for v in values], dtype=dtype)


def forward(current: torch.Tensor, mem0: torch.Tensor | None, norse: bool, zero_reset: bool,
            beta: float, th: float, c: float, scale: float, store: bool):
    """Spikes ``[T, ...]`` (current's dtype and memory layout), the last step's membrane and, if
    ``store``, every step's membrane ``[T, ...]`` (else None). A static input (time stride 0) is
    read from its one frame."""
    T, dtype = current.shape[0], current.dtype
    x = current.detach()
    if T > 1 and x.stride(0) == 0:
        x = x[:1]
    perm = _order(x)
    step = [p - 1 for p in perm[1:]]
    cur = _flat(x, perm, x.shape[0])
    n = cur.shape[1]
    out = _new(current.shape, perm, dtype)
    mem = _new(current.shape, perm, dtype) if store else None
    last = _new(current.shape[1:], step, dtype)
    m0 = torch.empty((1, 0), dtype=dtype) if mem0 is None else _flat(mem0.detach(), step, 1)
    _run(lif_forward, n, cur.numpy(), m0[0].numpy(), _flat(out, perm, T).numpy(),
         (_flat(mem, perm, T) if store else torch.empty((0, n), dtype=dtype)).numpy(),
         _flat(last, step, 1)[0].numpy(),
         (norse, zero_reset, _consts(cur.numpy().dtype, beta, th, c, scale, 0.0, 1.0)))
    return out, last, mem


def backward(grad_out: torch.Tensor | None, mem: torch.Tensor, mem0: torch.Tensor | None,
             grad_last: torch.Tensor | None, norse: bool, zero_reset: bool, atan: bool, beta: float,
             th: float, c: float, scale: float, slope: float):
    """dL/dcurrent ``[T, ...]`` (in ``mem``'s layout) and dL/dmem0 (None without ``mem0``)."""
    T, dtype = mem.shape[0], mem.dtype
    perm = _order(mem)
    step = [p - 1 for p in perm[1:]]
    m = _flat(mem, perm, T)
    n = m.shape[1]
    go = torch.zeros((1, n), dtype=dtype) if grad_out is None else _flat(grad_out, perm, T)
    gl = torch.zeros((1, n), dtype=dtype) if grad_last is None else _flat(grad_last, step, 1)
    m0 = torch.empty((1, 0), dtype=dtype) if mem0 is None else _flat(mem0.detach(), step, 1)
    g = _new(mem.shape, perm, dtype)
    g0 = _new(mem0.shape, step, dtype) if mem0 is not None else torch.empty((1, 0), dtype=dtype)
    _run(lif_backward, n, go.numpy(), m.numpy(), m0[0].numpy(), gl[0].numpy(),
         _flat(g, perm, T).numpy(), (g0 if mem0 is None else _flat(g0, step, 1))[0].numpy(),
         (norse, zero_reset, atan,
          _consts(m.numpy().dtype, beta, th, c, scale, 0.0, 1.0, slope, math.pi / 2 * slope,
                  slope / 2)))
    return g, (g0 if mem0 is not None else None)

"""Compiled CPU kernels (numba) of the fused LIF: every unit's whole time loop in one pass.

On CPU the per-step tensor ops of the fused LIF (``functional.lif_sequence``) each stream the full
``[B, C, H, W]`` map through memory (forward: ~5 passes per step; backward: the surrogate, the keep
factors and one pass per step), which costs about as much as the convolutions themselves. Here
every unit's time loop runs in registers, ``BLOCK`` units at a time (the inner loop over units
vectorises), so each input, output and saved membrane is touched once. ``_cpu`` lays tensors out
for these kernels and runs them on threads over contiguous unit ranges (the kernels release the
GIL).

The forward repeats the tensor path's operations one for one in the data type (same products,
sums and comparisons, no fused multiply-add), so spikes and membranes equal it exactly (a zero's
sign aside); the backward is the same recurrence (float tolerance). The constants ``k`` arrive as
an array of the data type (``_cpu.constants``), so that no float32 operation is promoted to
float64: beta, th, c, scale, 0, 1, slope, pi / 2 * slope, slope / 2.
"""

from __future__ import annotations

import numba
import numpy as np

BLOCK = 512  # units per inner loop: a block's state stays in L1


@numba.njit(nogil=True, cache=True, inline="always")
def _update(v, x, spk, norse, zero_reset, k):
    """One time step for a block of units: membrane ``v`` (in place, from the last step's) with
    input ``x``; spikes (0/1) into ``spk``. Each variant's loop is branch-free and vectorises."""
    b, h, c, s, zero, one = k[0], k[1], k[2], k[3], k[4], k[5]
    if norse:  # v <- (1 - z) u; u = v + c * (I * scale - v)
        for j in range(v.shape[0]):
            q = zero if v[j] > h else v[j]
            m = q + ((x[j] * s) - q) * c
            v[j] = m
            spk[j] = one if m > h else zero
    elif zero_reset:  # m = beta * (1 - r) * m + I, r = last step's spike
        for j in range(v.shape[0]):
            m = (zero if v[j] > h else v[j] * b) + x[j]
            v[j] = m
            spk[j] = one if m > h else zero
    else:  # m = beta * m + I - r * th
        for j in range(v.shape[0]):
            m = v[j] * b + x[j]
            m = m - h if v[j] > h else m
            v[j] = m
            spk[j] = one if m > h else zero


@numba.njit(nogil=True, cache=True, inline="always")
def _surrogate(m, sg, atan, k):
    """``sg`` = the surrogate derivative at ``m - threshold`` (snntorch's / norse's formula)."""
    h, one, a, p1, p2 = k[1], k[5], k[6], k[7], k[8]
    if atan:  # snntorch ATan: alpha / 2 / (1 + (pi / 2 * alpha * h) ** 2)
        for j in range(m.shape[0]):
            e = (m[j] - h) * p1
            sg[j] = (one / (e * e + one)) * p2
    else:  # fast sigmoid: 1 / (slope * |h| + 1) ** 2
        for j in range(m.shape[0]):
            e = abs(m[j] - h) * a + one
            sg[j] = one / (e * e)


@numba.njit(nogil=True, cache=True, inline="always")
def _carry(acc, sg, gi, m, last, norse, zero_reset, k):
    """One step back in time: ``acc`` (dL/dmembrane of step t + 1, in place) becomes step t's:
    sg_t gi_t + k_t acc, with k_t = beta (1 - s_t) (snntorch zero reset, the reset detached),
    beta (subtract) or (1 - c)(1 - s_t) - (1 - c) sg_t u_t (norse, the reset differentiated);
    at the last step acc holds dL/d(last membrane) and enters with factor 1."""
    b, h, c, zero, one = k[0], k[1], k[2], k[4], k[5]
    omc, cm1 = one - c, c - one
    if last:
        for j in range(acc.shape[0]):
            acc[j] = sg[j] * gi[j] + acc[j]
    elif norse:
        for j in range(acc.shape[0]):
            kt = (zero if m[j] > h else omc) + (sg[j] * m[j]) * cm1
            acc[j] = sg[j] * gi[j] + kt * acc[j]
    elif zero_reset:
        for j in range(acc.shape[0]):
            acc[j] = sg[j] * gi[j] + (zero if m[j] > h else b) * acc[j]
    else:
        for j in range(acc.shape[0]):
            acc[j] = sg[j] * gi[j] + b * acc[j]


@numba.njit(nogil=True, cache=True)
def lif_forward(cur, mem0, out, mem, last, lo, hi, norse, zero_reset, k):
    """Spikes ``out[t, i]`` (0/1) for units ``lo..hi``; ``mem[t, i]`` = membrane when ``mem`` has
    T rows (training), nothing when it has none; ``last`` = the last step's membrane. ``cur`` has
    T rows, or 1 (static input). ``mem0``: membrane before step 0 (length N), or empty = rest.
    The membrane at rest is 0, which makes step 0 the general update (beta * 0 + I = I and
    0 + c * (I * scale - 0) = c * (I * scale) exactly; thresholds are > 0, so rest never fired)."""
    T = out.shape[0]
    v = np.empty(BLOCK, out.dtype)
    for b0 in range(lo, hi, BLOCK):
        n = min(BLOCK, hi - b0)
        vb = v[:n]
        if mem0.shape[0] == 0:
            vb[:] = k[4]
        else:
            vb[:] = mem0[b0:b0 + n]
        for t in range(T):
            _update(vb, cur[0 if cur.shape[0] == 1 else t, b0:b0 + n], out[t, b0:b0 + n], norse,
                    zero_reset, k)
            if mem.shape[0] == T:
                mem[t, b0:b0 + n] = vb
        last[b0:b0 + n] = vb


@numba.njit(nogil=True, cache=True)
def lif_backward(go, mem, mem0, glast, g, g0, lo, hi, norse, zero_reset, atan, k):
    """BPTT of ``lif_forward`` for units ``lo..hi``: ``g`` = dL/dcurrent ``[T, N]``, ``g0`` =
    dL/dmem0 when ``mem0`` is given (else empty). ``go``: dL/dspikes (T rows, or one zero row);
    ``glast``: dL/d(last membrane) (length N)."""
    T = mem.shape[0]
    b, h, c, s, zero, one = k[0], k[1], k[2], k[3], k[4], k[5]
    out_scale = c * s if norse else one
    acc = np.empty(BLOCK, g.dtype)
    sgb = np.empty(BLOCK, g.dtype)
    for b0 in range(lo, hi, BLOCK):
        n = min(BLOCK, hi - b0)
        ab, sb = acc[:n], sgb[:n]
        ab[:] = glast[b0:b0 + n]
        for t in range(T - 1, -1, -1):
            m = mem[t, b0:b0 + n]
            _surrogate(m, sb, atan, k)
            _carry(ab, sb, go[0 if go.shape[0] == 1 else t, b0:b0 + n], m, t == T - 1, norse,
                   zero_reset, k)
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
                    g0b[j] = keep * (one - c) * ab[j]
            elif zero_reset:
                for j in range(n):
                    g0b[j] = (zero if m0[j] > h else b) * ab[j]
            else:
                for j in range(n):
                    g0b[j] = ab[j] * b


@numba.njit(nogil=True, cache=True, inline="always")
def _pool(spk, out, nr, W, Q):
    """2x2 max-pool of ``nr`` row pairs of 0/1 spikes laid out ``[2, W, Q]`` each."""
    L, WQ, W2 = 2 * W * Q, W * Q, W // 2
    if Q == 1:  # NCHW (training): one loop over the pooled row
        for r in range(nr):
            a, o = spk[r * L:(r + 1) * L], out[r * W2:(r + 1) * W2]
            for w2 in range(W2):
                i = 2 * w2
                o[w2] = max(max(a[i], a[i + 1]), max(a[W + i], a[W + i + 1]))
    else:  # channels-last (evaluation): vectorise over channels
        for r in range(nr):
            for w2 in range(W2):
                a = spk[r * L + 2 * w2 * Q:]
                o = out[(r * W2 + w2) * Q:]
                for q in range(Q):
                    o[q] = max(max(a[q], a[q + Q]), max(a[WQ + q], a[WQ + q + Q]))


@numba.njit(nogil=True, cache=True, inline="always")
def _route(a, d, i0, i1, i2, i3, g, h, zero):
    """One window's gradient ``g`` to the unit PyTorch's max-pool picks among units i0..i3
    (row-major): the first whose membrane ``a`` is above threshold, the first when none is.
    Branch-free: g1..g4 is what remains for the units after each one."""
    g1 = zero if a[i0] > h else g
    g2 = zero if a[i1] > h else g1
    g3 = zero if a[i2] > h else g2
    g4 = zero if a[i3] > h else g3  # none spiked: back to the first
    d[i0] = g - g1 + g4
    d[i1] = g1 - g2
    d[i2] = g2 - g3
    d[i3] = g3 - g4


@numba.njit(nogil=True, cache=True, inline="always")
def _unpool(m, gp, gi, nr, W, Q, h, zero):
    """Max-pool backward for ``nr`` row pairs: every window's gradient ``gp`` into ``gi``."""
    L, WQ, W2 = 2 * W * Q, W * Q, W // 2
    if Q == 1:  # NCHW (training): one loop over the pooled row
        for r in range(nr):
            a, d, o = m[r * L:(r + 1) * L], gi[r * L:(r + 1) * L], gp[r * W2:(r + 1) * W2]
            for w2 in range(W2):
                i = 2 * w2
                _route(a, d, i, i + 1, W + i, W + i + 1, o[w2], h, zero)
    else:  # channels-last (evaluation): vectorise over channels
        for r in range(nr):
            for w2 in range(W2):
                base = r * L + 2 * w2 * Q
                a, d, o = m[base:], gi[base:], gp[(r * W2 + w2) * Q:]
                for q in range(Q):
                    _route(a, d, q, q + Q, WQ + q, WQ + q + Q, o[q], h, zero)


@numba.njit(nogil=True, cache=True)
def lif_pool_forward(cur, out, mem, lo, hi, W, Q, norse, zero_reset, k):
    """LIF then 2x2 max-pool (stride 2) for the row pairs ``lo..hi`` of frames laid out as
    ``[P, H, W, Q]`` (NCHW: P = B C, Q = 1; channels-last: P = B, Q = C). A row pair is 2 W Q
    consecutive units; its pooled row, W/2 Q outputs. Spikes are 0/1, so the pool is their
    maximum; full-resolution spikes never leave the block."""
    T = out.shape[0]
    L = 2 * W * Q
    L4 = L // 4
    rp = max(1, BLOCK // L)
    v = np.empty(rp * L, out.dtype)
    spk = np.empty(rp * L, out.dtype)
    for r0 in range(lo, hi, rp):
        nr = min(rp, hi - r0)
        u0, n = r0 * L, nr * L
        vb, sb = v[:n], spk[:n]
        vb[:] = k[4]
        for t in range(T):
            _update(vb, cur[0 if cur.shape[0] == 1 else t, u0:u0 + n], sb, norse, zero_reset, k)
            if mem.shape[0] == T:
                mem[t, u0:u0 + n] = vb
            _pool(sb, out[t, r0 * L4:(r0 + nr) * L4], nr, W, Q)


@numba.njit(nogil=True, cache=True)
def lif_pool_backward(go, mem, g, lo, hi, W, Q, norse, zero_reset, atan, k):
    """BPTT of ``lif_pool_forward``: each pooled gradient ``go`` (T rows, or one zero row) goes to
    the unit PyTorch's max-pool picks (the first spiking unit of the window in row-major order,
    the window's first unit when none spiked), then through the LIF recurrence as in
    ``lif_backward``."""
    T = mem.shape[0]
    h, c, s, zero, one = k[1], k[2], k[3], k[4], k[5]
    out_scale = c * s if norse else one
    L = 2 * W * Q
    L4 = L // 4
    rp = max(1, BLOCK // L)
    acc = np.empty(rp * L, g.dtype)
    sgb = np.empty(rp * L, g.dtype)
    gib = np.empty(rp * L, g.dtype)
    for r0 in range(lo, hi, rp):
        nr = min(rp, hi - r0)
        u0, n = r0 * L, nr * L
        ab, sb, gb = acc[:n], sgb[:n], gib[:n]
        ab[:] = zero
        for t in range(T - 1, -1, -1):
            m = mem[t, u0:u0 + n]
            _surrogate(m, sb, atan, k)
            _unpool(m, go[0 if go.shape[0] == 1 else t, r0 * L4:(r0 + nr) * L4], gb, nr, W, Q,
                    h, zero)
            _carry(ab, sb, gb, m, t == T - 1, norse, zero_reset, k)
            gt = g[t, u0:u0 + n]
            for j in range(n):
                gt[j] = ab[j] * out_scale

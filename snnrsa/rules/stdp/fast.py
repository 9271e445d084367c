"""The fast learning path: first spikes of calibrated one-spike IF layers with pointwise
inhibition found from the receptive fields' input spike times, without the ``[T, B, C, H, W]``
potentials (equal spikes to the dense path, ``tests/test_stdp.py``)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from snnrsa.rules.stdp.functional import (
    Survivors,
)
from snnrsa.rules.stdp.modules import (
    FirstSpikePool,
)


class LayerIO:
    """What one conv layer saw for a batch: input first-spike times, output first-spike times
    and the potentials there (after pointwise inhibition), all ``[B, C, H, W]``. The fast path
    keeps only the per-position ``survivors`` and builds the dense maps when they are asked for."""

    def __init__(
        self,
        t_pre: torch.Tensor,
        t_post: torch.Tensor | None = None,
        v_post: torch.Tensor | None = None,
        survivors: Survivors | None = None,
        time_steps: int = 0,
    ) -> None:
        self.t_pre, self.survivors, self.time_steps = t_pre, survivors, time_steps
        self._t_post, self._v_post = t_post, v_post

    @property
    def t_post(self) -> torch.Tensor:
        if self._t_post is None:
            self._t_post = self.survivors.dense(self.time_steps).contiguous()
        return self._t_post

    @property
    def v_post(self) -> torch.Tensor:
        if self._v_post is None:
            s = self.survivors
            v = torch.zeros(*s.time.shape, s.n_features, dtype=s.potential.dtype, device=s.potential.device)
            v.scatter_(3, s.feature.unsqueeze(3), s.potential.unsqueeze(3))
            self._v_post = v.permute(0, 3, 1, 2).contiguous()
        return self._v_post

    def fired_share(self) -> tuple[float, float]:
        """Share of units that spike and share of features silent on every image."""
        if self.survivors is None:
            fired = self.t_post < self.time_steps
            return float(fired.float().mean()), float((fired.sum((0, 2, 3)) == 0).float().mean())
        s = self.survivors
        on = s.time < self.time_steps
        per_feature = torch.bincount(s.feature[on], minlength=s.n_features)
        return (float(on.sum()) / (on.numel() * s.n_features), float((per_feature == 0).float().mean()))


def receptive_fields(
    t_in: torch.Tensor, kernel: int, time_steps: int, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """Input spike times of the receptive fields of a same-padded stride-1 conv, ``[N, K']`` float,
    for all N = B*H*W positions or the flat positions ``rows``. ``t_in`` is ``[B, H, W, C]``; a
    field is ordered (dy, dx, c) and padded to K' (a multiple of 8) with T: inputs that never fire."""
    b, h, w, c = t_in.shape
    pad, k = kernel // 2, kernel * kernel * c
    padded = F.pad(t_in.float(), (0, 0, pad, pad, pad, pad), value=float(time_steps))
    k_pad = -(-k // 8) * 8
    if rows is None:
        sb, sh, sw, sc = padded.stride()
        fields = padded.as_strided((b, h, w, kernel, kernel, c), (sb, sh, sw, sh, sw, sc))
        out = torch.full((b, h, w, k_pad), float(time_steps), device=t_in.device)
        out[..., :k].view(b, h, w, kernel, kernel, c).copy_(fields)
        return out.view(b * h * w, k_pad)
    # a row gather from the padded [B*(H+2p)*(W+2p), C] map: k*k contiguous C-vectors per field
    base = (rows // (h * w) * (h + 2 * pad) + (rows // w) % h) * (w + 2 * pad) + rows % w
    offs = (
        torch.arange(kernel, device=rows.device).view(-1, 1) * (w + 2 * pad)
        + torch.arange(kernel, device=rows.device)
    ).flatten()
    cols = padded.view(-1, c).index_select(0, (base.unsqueeze(1) + offs).flatten())
    cols = cols.view(len(rows), k)
    return cols if k == k_pad else F.pad(cols, (0, k_pad - k), value=float(time_steps))


def gained_weight(block: nn.Module) -> torch.Tensor:
    """The block's conv kernels scaled by its neuron's per-feature gain (homeostasis), if any."""
    g = block.neuron.gain()
    return block.conv.weight if g is None else block.conv.weight * g.view(-1, 1, 1, 1)


def pointwise_first_spikes(
    t_in: torch.Tensor, weight: torch.Tensor, threshold: torch.Tensor, time_steps: int
) -> Survivors:
    """First spikes of a one-spike IF layer (same-padded stride-1 conv of one-spike inputs
    ``[B, H, W, C_in]`` with non-negative weights) after pointwise inhibition, without ever
    building the ``[T, B, C, H, W]`` potentials.

    An IF membrane with non-negative input only rises. So: one conv (or matmul) of the "input
    spiked at all" map gives the potentials at T-1 and the positions that fire at all; then, going
    back one step at a time, a matmul of the receptive fields' "input spiked by t-1" masks with the
    kernels tells which of the still-open positions already had a crossing at t-1; the others
    settle at t. Each step runs only on the open positions, and first spikes come late, so this
    costs about two passes instead of T convs plus the passes over the time-expanded tensor. The
    survivor of a position (the feature with the largest potential at the earliest crossing time,
    the lowest index on ties) is the one ``FirstSpikeNeuron.fire`` keeps. Homeostatic offsets
    enter as gain-scaled weights (``FirstSpikeNeuron.gain``)."""
    b, h, w, c_in = t_in.shape
    c_out, kernel, dtype, dev = weight.shape[0], weight.shape[-1], weight.dtype, weight.device
    n, k = b * h * w, c_in * kernel * kernel
    wt = torch.zeros(-(-k // 8) * 8, c_out, dtype=dtype, device=dev)
    wt[:k] = weight.permute(2, 3, 1, 0).reshape(k, c_out)
    th = float(threshold)

    def spiked_by(fields: torch.Tensor, t: int) -> torch.Tensor:
        """Mask of the field inputs that spiked before step t (one fused pass, as floats)."""
        return torch.lt(fields, t, out=torch.empty(fields.shape, dtype=dtype, device=dev))

    if k <= 64:  # small fields: the matmul on all of them beats mkldnn's conv
        cols = receptive_fields(t_in, kernel, time_steps)
        v = spiked_by(cols, time_steps) @ wt  # potentials at T-1
        rows = (v.amax(1) >= th).nonzero().squeeze(1)
        cols, v = cols.index_select(0, rows), v.index_select(0, rows)
    else:
        fired = (t_in < time_steps).to(dtype).permute(0, 3, 1, 2)
        v = F.conv2d(fired, weight, padding=kernel // 2).permute(0, 2, 3, 1).reshape(n, c_out)
        rows = (v.amax(1) >= th).nonzero().squeeze(1)
        v, cols = v.index_select(0, rows), receptive_fields(t_in, kernel, time_steps, rows)
    time = torch.full((n,), time_steps, dtype=torch.long, device=dev)
    feature = torch.zeros(n, dtype=torch.long, device=dev)
    potential = torch.zeros(n, dtype=dtype, device=dev)
    settled: list[tuple[torch.Tensor, torch.Tensor, int]] = []
    t = time_steps - 1
    while len(rows) and t > 0:
        v_prev = spiked_by(cols, t) @ wt  # potentials at t-1
        cross = v_prev.amax(1) >= th
        stay = (~cross).nonzero().squeeze(1)
        settled.append((rows.index_select(0, stay), v.index_select(0, stay), t))
        go = cross.nonzero().squeeze(1)
        rows, cols, v, t = (
            rows.index_select(0, go),
            cols.index_select(0, go),
            v_prev.index_select(0, go),
            t - 1,
        )
    settled.append((rows, v, 0))
    idx, pots = torch.cat([x[0] for x in settled]), torch.cat([x[1] for x in settled])
    # the largest potential at the settling step is >= th, so it is the survivor's (first max:
    # the lowest index on ties)
    best, feat = pots.max(1)
    time[idx] = torch.cat([torch.full_like(x[0], x[2]) for x in settled])
    feature[idx], potential[idx] = feat, best
    return Survivors(time.view(b, h, w), feature.view(b, h, w), potential.view(b, h, w), c_out)


def survivor_pool(s: Survivors, time_steps: int, kernel: int = 2) -> torch.Tensor:
    """``pool_times`` of the survivors' first spikes, float ``[B, H/k, W/k, C]``: per window and
    feature the earliest spike, scattered from the k*k survivors of each window (no dense map)."""
    b, h, w = s.time.shape
    if h % kernel or w % kernel:
        t = s.dense(time_steps, torch.float32)
        return (-F.max_pool2d(-t, kernel)).permute(0, 2, 3, 1).contiguous()
    hk, wk = h // kernel, w // kernel

    def windows(x: torch.Tensor) -> torch.Tensor:
        return x.view(b, hk, kernel, wk, kernel).permute(0, 1, 3, 2, 4).reshape(-1, kernel * kernel)

    out = torch.full((b * hk * wk, s.n_features), float(time_steps), device=s.time.device)
    out.scatter_reduce_(1, windows(s.feature), windows(s.time).float(), "amin")
    return out.view(b, hk, wk, s.n_features)




def fast_path_ok(block: Any, beta: float) -> bool:
    """Whether ``pointwise_first_spikes`` computes this block exactly as ``fire`` would."""
    conv, neuron = block.conv, block.neuron
    k = conv.kernel_size
    return (
        neuron.one_spike
        and neuron.pointwise
        and beta == 1.0
        and bool(neuron.calibrated)
        and conv.bias is None
        and conv.groups == 1
        and tuple(conv.stride) == (1, 1)
        and tuple(conv.dilation) == (1, 1)
        and k[0] == k[1]
        and k[0] % 2 == 1
        and tuple(conv.padding) == (k[0] // 2, k[0] // 2)
        and isinstance(block.pool, FirstSpikePool)
        and block.pool.kernel == 2
    )

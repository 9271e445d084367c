"""The fast learning path: first spikes of one-spike IF layers found from the receptive fields'
input spike times, without the ``[T, B, C, H, W]`` potentials (equal spikes to the dense path,
``tests/test_stdp.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from snnrsa.rules.stdp.modules import FirstSpikePool


@dataclass
class LayerIO:
    """What one conv layer saw for a batch: input first-spike times ``[B, C_in, H, W]`` and the
    output first-spike times and potentials there ``[B, C, H', W']`` (T: none; 0 where silent)."""

    t_pre: torch.Tensor
    t_post: torch.Tensor
    v_post: torch.Tensor
    time_steps: int

    def fired_share(self) -> tuple[float, float]:
        """Share of units that spike and share of features silent on every image."""
        fired = self.t_post < self.time_steps
        return float(fired.float().mean()), float((fired.sum((0, 2, 3)) == 0).float().mean())


def gained_weight(block: nn.Module) -> torch.Tensor:
    """The block's conv kernels scaled by its neuron's per-feature gain (homeostasis), if any."""
    g = block.neuron.gain()
    return block.conv.weight if g is None else block.conv.weight * g.view(-1, 1, 1, 1)


def receptive_fields(t_in: torch.Tensor, kernel: int, padding: int, time_steps: int) -> torch.Tensor:
    """Input spike times of every receptive field of a zero-padded stride-1 conv, ``[N, K]``
    (uint8 for T < 255: a quarter of the memory traffic of floats) with N = B*H'*W' and K ordered
    (dy, dx, c); padded inputs never spike (time T)."""
    b, c, h, w = t_in.shape
    dtype = torch.uint8 if time_steps < 255 else torch.int32
    x = F.pad(t_in.permute(0, 2, 3, 1).to(dtype), (0, 0, padding, padding, padding, padding),
              value=time_steps)
    h_out, w_out = h + 2 * padding - kernel + 1, w + 2 * padding - kernel + 1
    sb, sh, sw, sc = x.stride()
    fields = x.as_strided((b, h_out, w_out, kernel, kernel, c), (sb, sh, sw, sh, sw, sc))
    return fields.reshape(b * h_out * w_out, kernel * kernel * c)


def if_first_spikes(
    t_in: torch.Tensor,
    weight: torch.Tensor,
    padding: int,
    threshold: torch.Tensor,
    time_steps: int,
    pointwise: bool = False,
    potentials: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """First-spike times and potentials there ``[B, C_out, H', W']`` (T and 0 where silent) of a
    one-spike IF layer (zero-padded stride-1 conv of one-spike inputs ``[B, C_in, H, W]`` with
    non-negative weights, no reset), without building the ``[T, ...]`` potentials; with
    ``pointwise`` only each position's earliest unit (then the larger potential, then the lower
    index) is kept, as ``pointwise_mask`` keeps it. ``potentials=False`` (layers whose spike
    times are all that is needed) skips the potentials and returns zeros for them.

    An IF membrane with non-negative input only rises. So one matmul of the receptive fields'
    "input spiked at all" masks with the kernels gives the potentials at T-1 and the units that
    fire at all; then, going back one step at a time, a matmul of the "input spiked by t" masks
    on the positions where some unit was still at threshold at t+1 tells which units already were
    at t: a unit's first spike is the earliest step it is at threshold. Settled positions leave
    the loop, so this costs a few passes instead of T convs."""
    b, _, h, w = t_in.shape
    c_out, kernel, dtype, dev = weight.shape[0], weight.shape[-1], weight.dtype, weight.device
    cols = receptive_fields(t_in, kernel, padding, time_steps)
    h_out, w_out = h + 2 * padding - kernel + 1, w + 2 * padding - kernel + 1
    wt = weight.permute(2, 3, 1, 0).reshape(-1, c_out).to(dtype)
    n = len(cols)
    rows = torch.arange(n, device=dev)
    spiked = torch.empty(cols.shape, dtype=dtype, device=dev)
    first_t = torch.full((n,), time_steps, dtype=torch.long, device=dev)  # pointwise: last at th
    count = torch.zeros(n, c_out, dtype=torch.uint8, device=dev)  # otherwise: steps at threshold
    first_v = torch.zeros(n, c_out, dtype=dtype, device=dev)
    for t in range(time_steps - 1, -1, -1):
        v = torch.lt(cols, t + 1, out=spiked[: len(cols)]) @ wt  # potentials at t
        above = v >= float(threshold)
        on = above.any(1)
        n_on = int(on.sum())
        if not n_on:
            break
        # positions with no unit at threshold are settled: drop them (lazily where only the
        # spike counts are kept, as rows without any unit at threshold add nothing to them)
        if n_on < len(rows) and (pointwise or n_on < 0.75 * len(rows)):
            keep = on.nonzero().squeeze(1)
            rows, cols = rows.index_select(0, keep), cols.index_select(0, keep)
            v, above = v.index_select(0, keep), above.index_select(0, keep)
        if pointwise:
            first_t[rows] = t
            first_v.index_copy_(0, rows, v)
        else:
            count.index_add_(0, rows, above.view(torch.uint8))
            if potentials:
                first_v.index_copy_(0, rows, torch.where(above, v, first_v.index_select(0, rows)))
    if pointwise:
        time, potential = _pointwise_winners(first_t, first_v, time_steps)
    else:
        time, potential = time_steps - count.long(), first_v
    shape = (b, h_out, w_out, c_out)
    return (time.view(shape).permute(0, 3, 1, 2).contiguous(),
            potential.view(shape).permute(0, 3, 1, 2).contiguous())


def _pointwise_winners(first_t: torch.Tensor, first_v: torch.Tensor,
                       time_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per position ``[n, C]`` spike times (T where silent) and potentials of its one winner:
    at the earliest step at threshold, the unit with the largest potential."""
    n, c_out = first_v.shape
    best, feature = first_v.max(1)
    fired = first_t < time_steps
    time = torch.full((n, c_out), time_steps, dtype=torch.long, device=first_v.device)
    time.scatter_(1, feature.unsqueeze(1), first_t.unsqueeze(1))
    potential = torch.zeros_like(first_v)
    potential.scatter_(1, feature.unsqueeze(1), best.masked_fill(~fired, 0.0).unsqueeze(1))
    return time, potential


def fast_path_ok(block: Any, beta: float) -> bool:
    """Whether ``if_first_spikes`` computes this block exactly as ``fire`` would."""
    conv, neuron = block.conv, block.neuron
    k = conv.kernel_size
    return (
        neuron.one_spike
        and beta == 1.0
        and bool(neuron.calibrated)
        and conv.bias is None
        and conv.groups == 1
        and tuple(conv.stride) == (1, 1)
        and tuple(conv.dilation) == (1, 1)
        and k[0] == k[1]
        and conv.padding[0] == conv.padding[1]
        and conv.padding_mode == "zeros"
        and isinstance(block.pool, FirstSpikePool)
    )

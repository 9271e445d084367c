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
    float with N = B*H'*W' and K ordered (dy, dx, c); padded inputs never spike (time T)."""
    b, c, h, w = t_in.shape
    x = F.pad(t_in.permute(0, 2, 3, 1).float(), (0, 0, padding, padding, padding, padding),
              value=float(time_steps))
    h_out, w_out = h + 2 * padding - kernel + 1, w + 2 * padding - kernel + 1
    sb, sh, sw, sc = x.stride()
    fields = x.as_strided((b, h_out, w_out, kernel, kernel, c), (sb, sh, sw, sh, sw, sc))
    return fields.reshape(b * h_out * w_out, kernel * kernel * c)


def if_first_spikes(
    t_in: torch.Tensor, weight: torch.Tensor, padding: int, threshold: torch.Tensor, time_steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """First-spike times and potentials there ``[B, C_out, H', W']`` of a one-spike IF layer
    (zero-padded stride-1 conv of one-spike inputs ``[B, C_in, H, W]``, no reset), without
    building the ``[T, ...]`` potentials: per step one matmul of the receptive fields' "input
    spiked by t" masks with the kernels, on the positions where some unit fires at all."""
    b, _, h, w = t_in.shape
    c_out, kernel, dtype, dev = weight.shape[0], weight.shape[-1], weight.dtype, weight.device
    cols = receptive_fields(t_in, kernel, padding, time_steps)
    h_out, w_out = h + 2 * padding - kernel + 1, w + 2 * padding - kernel + 1
    wt = weight.permute(2, 3, 1, 0).reshape(-1, c_out).to(dtype)
    th = float(threshold)
    n = len(cols)
    time = torch.full((n, c_out), time_steps, dtype=torch.long, device=dev)
    potential = torch.zeros(n, c_out, dtype=dtype, device=dev)
    spiked = torch.empty(cols.shape, dtype=dtype, device=dev)
    v = torch.lt(cols, time_steps, out=spiked) @ wt  # potentials at T-1: who fires at all
    rows = (v >= th).any(1).nonzero().squeeze(1)
    cols = cols.index_select(0, rows)
    # potentials only rise: the first-spike time is T minus the number of steps at or above
    # threshold, and the potential there is the smallest one at or above threshold
    count = torch.zeros(len(rows), c_out, dtype=torch.uint8, device=dev)
    v_sub = torch.full((len(rows), c_out), float("inf"), dtype=dtype, device=dev)
    spiked, v = spiked[: len(rows)], torch.empty(len(rows), c_out, dtype=dtype, device=dev)
    above = torch.empty(v.shape, dtype=torch.bool, device=dev)
    for t in range(time_steps):
        torch.mm(torch.lt(cols, t + 1, out=spiked), wt, out=v)  # potentials at t
        torch.ge(v, th, out=above)
        count.add_(above.view(torch.uint8))
        torch.minimum(v_sub, v.masked_fill_(~above, float("inf")), out=v_sub)
    t_sub = time_steps - count.long()
    v_sub.masked_fill_(count == 0, 0.0)
    time[rows], potential[rows] = t_sub, v_sub

    def dense(x: torch.Tensor) -> torch.Tensor:
        return x.view(b, h_out, w_out, c_out).permute(0, 3, 1, 2).contiguous()

    return dense(time), dense(potential)


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

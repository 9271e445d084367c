"""Stateless spike-time functions of canonical STDP (SpykeTorch's ``functional``): first-spike
times, IF membranes of one-spike trains, pointwise inhibition, adaptive thresholds, k-WTA and the
soft-bounded STDP update. Tensors in, tensors out; no module state."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from snnrsa.schema import STDPConfig


def per_layer(values: list, i: int) -> Any:
    return values[min(i, len(values) - 1)]


def convergence(w: torch.Tensor) -> float:
    """C = mean(w(1-w)): 0 when every weight sits at a bound (the recipe's stopping measure)."""
    return float((w * (1 - w)).mean())


def first_spike_times(spikes: torch.Tensor) -> torch.Tensor:
    """Index of each unit's first spike over the leading time axis; T where it never fires."""
    t = spikes.shape[0]
    steps = torch.arange(t, device=spikes.device, dtype=torch.int16).view(-1, *[1] * (spikes.dim() - 1))
    # a min over the leading axis; argmax there is a strided reduction, ~30x slower on CPU
    fired = spikes if spikes.dtype == torch.bool else spikes > 0
    return torch.where(fired, steps, torch.tensor(t, dtype=torch.int16)).amin(0).long()


def spike_train(t_first: torch.Tensor, time_steps: int, dtype: torch.dtype) -> torch.Tensor:
    """One spike per unit at ``t_first`` (none where it equals T), as ``[T, ...]``."""
    steps = torch.arange(time_steps, device=t_first.device).view(-1, *[1] * t_first.dim())
    return (steps == t_first.unsqueeze(0)).to(dtype)


def leaky_cumsum(frames: torch.Tensor, beta: float) -> torch.Tensor:
    """Σ_{s≤t} β^{t−s} x_s over the leading time axis: an IF/LIF membrane without reset."""
    if beta == 1.0:
        return frames.cumsum(0)
    v = frames.clone()
    for t in range(1, len(v)):
        v[t].add_(v[t - 1], alpha=beta)
    return v


def cumulative_frames(
    t_in: torch.Tensor, time_steps: int, beta: float, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``leaky_cumsum`` of one-spike trains given by their spike times ``[B, C, H, W]``, built
    directly: 1[t_in ≤ t]·β^{t−t_in}. A conv of these frames is the layer's membrane potential."""
    steps = torch.arange(time_steps, device=t_in.device).view(-1, *[1] * t_in.dim())
    fired = t_in.unsqueeze(0) <= steps
    if beta == 1.0:
        return fired.to(dtype)
    decay = torch.pow(beta, (steps - t_in.unsqueeze(0)).clamp(min=0).to(dtype))
    return torch.where(fired, decay, torch.zeros((), dtype=dtype, device=t_in.device))


def order_key(t_first: torch.Tensor, v_first: torch.Tensor, time_steps: int) -> torch.Tensor:
    """A float64 key whose ascending order is: earlier spike first, then larger potential at that
    time; units that never fire get +inf. Ties fall to the lower index (argmin's first hit)."""
    scale = 2.0 * (float(v_first.abs().max()) + 1.0) if v_first.numel() else 1.0
    key = t_first.double().mul_(scale).sub_(v_first)
    return key.masked_fill(t_first >= time_steps, math.inf)


def pointwise_mask(t_first: torch.Tensor, v_first: torch.Tensor, time_steps: int) -> torch.Tensor:
    """Mask ``[B, C, H, W]`` keeping, per position, the feature that fires first (ties: the larger
    potential at that time, then the lower index); ``t_first`` may be any integer dtype.

    Lexicographic, in cheap passes over the channel axis (earliest time, then the largest potential
    among those, then the first such channel only where a tie is left), instead of a float64 key."""
    fired = t_first < time_steps
    cand = (t_first == t_first.amin(1, keepdim=True)) & fired
    v_best = torch.where(cand, v_first, float("-inf")).amax(1, keepdim=True)
    keep = cand & (v_first == v_best)
    n_keep = keep.view(torch.uint8).sum(1, dtype=torch.uint8 if keep.shape[1] < 256 else torch.int32)
    if bool((n_keep > 1).any()):
        first = keep.view(torch.uint8).argmax(1, keepdim=True)  # first maximal value
        chans = torch.arange(t_first.shape[1], device=t_first.device).view(1, -1, 1, 1)
        keep = keep & (chans == first)
    return keep


THRESHOLD_MARGIN = 1e-4  # relative: well above the float32 rounding of sums of <= 10^3 terms in [0, 1]


def adaptive_threshold(peak: torch.Tensor, quantile: float, default: float) -> float:
    """The ``quantile`` of the positive peak potentials ``[B, C, H, W]``, lowered where needed so
    that every image with any input has at least one unit at threshold (no image of the
    calibration batch leaves the layer silent); ``default`` when nothing has input.

    The value is then lowered by a relative ``THRESHOLD_MARGIN``: it is one unit's potential, and
    units with that exact potential (the same receptive-field input; common on flat image regions)
    must fire however the sum is ordered (per-frame or cumulative convs, matmuls, per image or
    batched), not by the luck of float rounding."""
    flat = peak.flatten()
    flat = flat[flat > 0]
    if not flat.numel():
        return default
    k = max(1, min(flat.numel(), int(math.ceil(quantile * flat.numel()))))
    per_image = peak.flatten(1).amax(1)
    per_image = per_image[per_image > 0]
    value = min(float(flat.kthvalue(k).values), float(per_image.min()))
    return float(torch.tensor(value * (1.0 - THRESHOLD_MARGIN), dtype=torch.float32))


def pool_times(t_first: torch.Tensor, kernel: int = 2) -> torch.Tensor:
    """Earliest spike time in each pooling window."""
    return (-F.max_pool2d(-t_first.float(), kernel)).long()


def latency_times(x: torch.Tensor, threshold: float, time_steps: int) -> torch.Tensor:
    """First-spike times ``[B, C, H, W]`` (T: none) of the latency code of ``x``, exactly as
    ``snnrsa.model.encodings.Encoder`` places its spikes, without building the ``[T, ...]`` trains."""
    x = x.clamp(0.0, 1.0)
    span = max(1.0 - threshold, 1e-12)
    spike_time = torch.round(((1.0 - x) / span).clamp(0.0, 1.0) * (time_steps - 1)).long()
    return spike_time.masked_fill_(x <= threshold, time_steps)


@dataclass
class Winners:
    """k-WTA winners of one layer, flattened over the batch."""

    image: torch.Tensor
    feature: torch.Tensor
    y: torch.Tensor
    x: torch.Tensor
    time: torch.Tensor


def k_winners(
    t_first: torch.Tensor,
    v_first: torch.Tensor,
    time_steps: int,
    k: int,
    radius: int,
    exclusive: bool = False,
) -> Winners:
    """Per image, up to k winners: repeatedly the earliest-firing neuron (ties: larger potential,
    then lower flat index); its feature map and a (2r+1)^2 neighbourhood in every map drop out.
    Times and potentials are ``[B, C, H, W]``; each round is one reduction over the batch.

    ``exclusive``: at most one feature fires per position (pointwise inhibition), so the search
    runs on the per-position survivors ``[B, H*W]``, C times fewer candidates, with the same
    winners (ties still go to the lower flat index ``c*H*W + y*W + x``)."""
    if exclusive:
        return _k_winners_exclusive(t_first, v_first, time_steps, k, radius)
    b, c, h, w = t_first.shape
    dev = t_first.device
    key = order_key(t_first, v_first, time_steps)
    rows = torch.arange(b, device=dev)
    offs = torch.arange(-radius, radius + 1, device=dev)
    found: list[tuple[torch.Tensor, ...]] = []
    for _ in range(k):
        best, flat = key.flatten(1).min(1)
        ok = torch.isfinite(best)
        if not bool(ok.any()):
            break
        f, rem = flat // (h * w), flat % (h * w)
        yy, xx = rem // w, rem % w
        r, f, yy, xx = rows[ok], f[ok], yy[ok], xx[ok]
        found.append((r, f, yy, xx, t_first[r, f, yy, xx]))
        key[r, f] = math.inf
        ny = (yy.view(-1, 1) + offs).clamp(0, h - 1)  # clamped rows stay inside the window
        nx = (xx.view(-1, 1) + offs).clamp(0, w - 1)
        key.permute(0, 2, 3, 1)[r.view(-1, 1, 1), ny.view(len(r), -1, 1), nx.view(len(r), 1, -1)] = math.inf
    return _gather_winners(found, dev)


def _gather_winners(found: list[tuple[torch.Tensor, ...]], dev: torch.device) -> Winners:
    if not found:
        empty = torch.zeros(0, dtype=torch.long, device=dev)
        return Winners(empty, empty, empty, empty, empty)
    return Winners(*[torch.cat([f[i] for f in found]) for i in range(5)])


def _k_winners_exclusive(
    t_first: torch.Tensor, v_first: torch.Tensor, time_steps: int, k: int, radius: int
) -> Winners:
    """``k_winners`` when at most one feature fires per position."""
    fired = t_first < time_steps
    small = torch.uint8 if time_steps < 255 else torch.int32
    time = t_first.to(small).amin(1).long()  # the survivor's time (T: none)
    potential = v_first.masked_fill(~fired, 0.0).sum(1)  # its potential (one term)
    chans = torch.arange(t_first.shape[1], device=t_first.device, dtype=torch.int32)
    feature = torch.where(fired, chans.view(1, -1, 1, 1), t_first.shape[1]).amin(1).long()
    feature = feature.masked_fill_(feature >= t_first.shape[1], 0)
    return survivor_winners(Survivors(time, feature, potential, t_first.shape[1]), time_steps, k, radius)


def stdp_counts(
    t_pre: torch.Tensor, win: Winners, n_features: int, kernel: int, time_steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per feature and weight: how many winning events had that input spike no later than the
    winner (LTP), and how many events each feature had. ``t_pre`` holds input first-spike times
    ``[B, C_in, H, W]`` (T: none)."""
    pad = kernel // 2
    padded = F.pad(t_pre.float(), (pad,) * 4, value=float(time_steps))
    offs = torch.arange(kernel, device=padded.device)
    chans = torch.arange(padded.shape[1], device=padded.device)
    patches = padded[
        win.image.view(-1, 1, 1, 1),
        chans.view(1, -1, 1, 1),
        (win.y.view(-1, 1) + offs).view(-1, 1, kernel, 1),
        (win.x.view(-1, 1) + offs).view(-1, 1, 1, kernel),
    ].flatten(1)
    ltp = (patches <= win.time.float().unsqueeze(1)).float()
    n_ltp = torch.zeros(n_features, patches.shape[1], device=padded.device).index_add_(0, win.feature, ltp)
    events = torch.bincount(win.feature, minlength=n_features).float()
    return n_ltp, events


def soft_bound_update(
    w: torch.Tensor,
    n_ltp: torch.Tensor,
    events: torch.Tensor,
    a_plus: float,
    a_minus: float,
    reduce: str,
) -> torch.Tensor:
    """Δw = w(1-w)·(a⁺·#LTP − a⁻·#LTD), summed over events or averaged per feature."""
    drive = a_plus * n_ltp - a_minus * (events.unsqueeze(1) - n_ltp)
    if reduce == "mean":
        drive = drive / events.clamp(min=1).unsqueeze(1)
    return w * (1 - w) * drive.view_as(w).to(w.dtype)


def learning_rates(cfg: STDPConfig, images_seen: int) -> tuple[float, float]:
    """a⁺ and a⁻ after ``images_seen`` images of the current layer (the doubling ramp)."""
    a_plus = min(cfg.a_plus * cfg.ramp_factor ** (images_seen // cfg.ramp_every), cfg.a_plus_max)
    return a_plus, a_plus * cfg.a_minus / cfg.a_plus


@dataclass
class Survivors:
    """Per position ``[B, H, W]``, the one unit left after pointwise inhibition: its spike time
    (T: none fired there), feature and potential at that time (0 where none fired)."""

    time: torch.Tensor
    feature: torch.Tensor
    potential: torch.Tensor
    n_features: int

    def dense(self, time_steps: int, dtype: torch.dtype = torch.long) -> torch.Tensor:
        """First-spike times ``[B, C, H, W]`` (T: none), as ``FirstSpikeNeuron.fire`` gives them."""
        b, h, w = self.time.shape
        t = torch.full((b, h, w, self.n_features), time_steps, dtype=dtype, device=self.time.device)
        t.scatter_(3, self.feature.unsqueeze(3), self.time.unsqueeze(3).to(dtype))
        return t.permute(0, 3, 1, 2)


def survivor_winners(s: Survivors, time_steps: int, k: int, radius: int) -> Winners:
    """``k_winners`` on the per-position survivors of pointwise inhibition ``[B, H*W]``."""
    b, h, w = s.time.shape
    hw, dev = h * w, s.time.device
    t_pos, feat = s.time.reshape(b, hw), s.feature.reshape(b, hw)
    key = order_key(t_pos, s.potential.reshape(b, hw), time_steps)
    flat = feat * hw + torch.arange(hw, device=dev)  # the flat index over [C, H, W]: ties
    offs = torch.arange(-radius, radius + 1, device=dev)
    rows = torch.arange(b, device=dev)
    none = torch.iinfo(torch.long).max
    found: list[tuple[torch.Tensor, ...]] = []
    for _ in range(k):
        best = key.amin(1, keepdim=True)
        ok = torch.isfinite(best.squeeze(1))
        if not bool(ok.any()):
            break
        sel = torch.where(key == best, flat, none).amin(1)
        r, f = rows[ok], sel[ok] // hw
        at = sel[ok] % hw
        yy, xx = at // w, at % w
        key.masked_fill_(feat == (sel // hw).unsqueeze(1), math.inf)  # the winner's map
        ny = (yy.view(-1, 1) + offs).clamp(0, h - 1)  # clamped rows stay inside the window
        nx = (xx.view(-1, 1) + offs).clamp(0, w - 1)
        key.view(b, h, w)[r.view(-1, 1, 1), ny.view(len(r), -1, 1), nx.view(len(r), 1, -1)] = math.inf
        found.append((r, f, yy, xx, t_pos[r, at]))
    return _gather_winners(found, dev)

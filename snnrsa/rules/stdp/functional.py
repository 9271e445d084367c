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


def pool_times(t_first: torch.Tensor, kernel: int = 2, padding: int = 0) -> torch.Tensor:
    """Earliest spike time in each stride-``kernel`` pooling window (padded cells never spike)."""
    return (-F.max_pool2d(-t_first.float(), kernel, padding=padding)).long()


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
    """``k_winners`` when at most one feature fires per position: the search runs on the
    per-position survivors ``[B, H*W]``."""
    b, c, h, w = t_first.shape
    hw, dev = h * w, t_first.device
    fired = t_first < time_steps
    small = torch.uint8 if time_steps < 255 else torch.int32
    t_pos = t_first.to(small).amin(1).long().reshape(b, hw)  # the survivor's time (T: none)
    potential = v_first.masked_fill(~fired, 0.0).sum(1).reshape(b, hw)  # its potential (one term)
    chans = torch.arange(c, device=dev, dtype=torch.int32)
    feat = torch.where(fired, chans.view(1, -1, 1, 1), c).amin(1).long()
    feat = feat.masked_fill_(feat >= c, 0).reshape(b, hw)
    key = order_key(t_pos, potential, time_steps)
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


def stdp_drive(
    t_pre: torch.Tensor,
    win: Winners,
    n_features: int,
    kernel: int,
    padding: int,
    time_steps: int,
    a_plus: torch.Tensor,
    a_minus: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per feature and weight, the summed STDP drive Σ ±a over the winning events: +a⁺ of the
    event's image where the input spiked no later than the winner (SpykeTorch's pre ≤ post
    pairing), −a⁻ elsewhere (inputs that never spiked included); and the events per feature.
    ``t_pre``: input first-spike times ``[B, C_in, H, W]`` (T: none); ``a_plus``/``a_minus``: per
    image of the batch (the ramp moves within a batch as it would image by image)."""
    padded = F.pad(t_pre.float(), (padding,) * 4, value=float(time_steps))
    offs = torch.arange(kernel, device=padded.device)
    chans = torch.arange(padded.shape[1], device=padded.device)
    patches = padded[
        win.image.view(-1, 1, 1, 1),
        chans.view(1, -1, 1, 1),
        (win.y.view(-1, 1) + offs).view(-1, 1, kernel, 1),
        (win.x.view(-1, 1) + offs).view(-1, 1, 1, kernel),
    ].flatten(1)
    ltp = patches <= win.time.float().unsqueeze(1)
    ap, am = a_plus[win.image].unsqueeze(1), a_minus[win.image].unsqueeze(1)
    drive = torch.where(ltp, ap, -am)
    total = torch.zeros(n_features, patches.shape[1], device=padded.device, dtype=drive.dtype)
    total.index_add_(0, win.feature, drive)
    events = torch.bincount(win.feature, minlength=n_features).float()
    return total, events


LOGIT_EPS = 1e-6  # weights are held in [eps, 1 - eps] before the logit (float32: finite logits)


def soft_bound_step(w: torch.Tensor, drive: torch.Tensor, mode: str) -> torch.Tensor:
    """New weights after the summed drive ``[C, K]`` of a batch's events.

    logit: the soft-bounded rule dw = a·w(1−w) per event integrated exactly, logit(w) += Σ ±a:
    the same result whatever the order and grouping of the events, so a batch's summed drive is
    applying its events one at a time (at the batch's winners); equal to the recipe's step
    w += a·w(1−w) to first order in a. linear: w += w(1−w)·Σ ±a at the batch's weights, clamped
    to [0, 1] (the recipe's per-image step, applied once per batch)."""
    d = drive.view_as(w).to(w.dtype)
    if mode == "logit":
        return torch.sigmoid(torch.logit(w.clamp(LOGIT_EPS, 1 - LOGIT_EPS)) + d)
    return (w + w * (1 - w) * d).clamp(0, 1)


def learning_rates(cfg: STDPConfig, images_seen: int, layer: int = 0) -> tuple[float, float]:
    """a⁺ and a⁻ after ``images_seen`` images of ``layer``: the doubling ramp on the layers in
    ``ramp_layers`` (the recipe: conv1 only), the base rates elsewhere."""
    if layer not in cfg.ramp_layers:
        return cfg.a_plus, cfg.a_minus
    doublings = min(images_seen // cfg.ramp_every, 64)  # past the cap long before; no float overflow
    a_plus = min(cfg.a_plus * cfg.ramp_factor**doublings, cfg.a_plus_max)
    return a_plus, a_plus * cfg.a_minus / cfg.a_plus


def batch_rates(cfg: STDPConfig, images_seen: int, n: int, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``learning_rates`` of each image of a batch of ``n`` that starts at ``images_seen``."""
    rates = [learning_rates(cfg, images_seen + i, layer) for i in range(n)]
    return torch.tensor([r[0] for r in rates]), torch.tensor([r[1] for r in rates])



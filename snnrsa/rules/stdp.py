"""Canonical convolutional STDP on spiking neurons (Kheradpisheh et al. 2018; Mozafari et al. 2019).

The rule turns the shared backbone into a first-spike network in place: an optional on/off
difference-of-Gaussians front end before the configured spike encoder, conv weights in [0, 1] with no
BatchNorm, integrate-and-fire (or leaky) neurons that fire at most once per image, optional
pointwise lateral inhibition, and pools that keep each pooled unit's earliest spike. ``net(x)`` and
``net.features`` then run exactly the network that learns, so RSA and checkpoints see it unchanged.

Learning is greedy layer-wise: per image, k-winner-take-all with lateral inhibition picks at most k
winning neurons (one per feature map); each winner's kernel gets the soft-bounded multiplicative
update Δw = +a⁺·w(1−w) where its input spiked no later than it did, −a⁻·w(1−w) elsewhere. A batch is
processed at once (no per-image loop): winners are found for all images in parallel and their
updates, computed at the same weights, are summed or averaged per feature.

Speed: for calibrated one-spike IF layers with pointwise inhibition (the default), the learning path
(``all_io``) never builds the ``[T, B, C, H, W]`` potentials: ``pointwise_first_spikes`` finds each
position's surviving first spike from the receptive fields' input spike times with about two matmul
passes (a backward search over time on the positions that fire), layers pass only ``[B, H, W, C]``
spike times, and the k-WTA runs on the ``[B, H*W]`` survivors. Other settings take the conv over all
T cumulative frames. Both give the same spikes (tests/test_stdp.py); tools/bench_stdp.py times the
batched rule against a per-image reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from snnrsa.network import Network
from snnrsa.rules.base import Rule
from snnrsa.schema import ConfigError, STDPConfig


def _per_layer(values: list, i: int) -> Any:
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


class FirstSpikeNeuron(nn.Module):
    """IF/LIF neurons; with ``one_spike`` the membrane is never reset, so the first threshold
    crossing is the only spike and the potential is a (leaky) running sum of the input current.

    The threshold is a buffer. With ``quantile`` set it is adaptive: the first batch the neuron
    sees (or the next one after ``recalibrate()``) sets it to that quantile of the peak potentials
    of its units that received any input, so every layer fires whatever its fan-in and input
    statistics. ``fire`` works on potentials ``[T, B, C, H, W]`` and returns first-spike times and
    the potential at that time ``[B, C, H, W]`` (after pointwise inhibition); ``forward`` takes input
    currents and returns spike trains, as the backbone expects.
    """

    spiking = True

    def __init__(
        self,
        threshold: float,
        beta: float,
        one_spike: bool,
        pointwise: bool,
        quantile: float | None = None,
        n_features: int | None = None,
    ) -> None:
        super().__init__()
        self.beta, self.one_spike, self.pointwise, self.quantile = (beta, one_spike, pointwise, quantile)
        self.register_buffer("threshold", torch.tensor(float(threshold)))
        self.register_buffer("calibrated", torch.tensor(quantile is None))
        # per-feature relative threshold offsets (homeostasis); only registered when used, so
        # checkpoints without homeostasis keep their keys
        self.register_buffer("offset", None if n_features is None else torch.zeros(n_features))

    def gain(self) -> torch.Tensor | None:
        """Per-feature input gain ``1 / (1 + offset)`` ``[C]``, or None without offsets.

        Crossing ``threshold * (1 + o_c)`` with potential v is crossing ``threshold`` with
        v / (1 + o_c): homeostasis scales each feature's drive, so every path (conv, fast path,
        reference) keeps one scalar threshold and compares scaled potentials."""
        return None if self.offset is None else 1.0 / (1.0 + self.offset)

    def scaled(self, v: torch.Tensor) -> torch.Tensor:
        """``[..., C, H, W]`` potentials or currents times the per-feature gain."""
        g = self.gain()
        return v if g is None else v * g.view(-1, 1, 1)

    def recalibrate(self) -> None:
        """Set the threshold again from the next batch (adaptive mode only)."""
        if self.quantile is not None:
            self.calibrated.fill_(False)

    def calibrate(self, v: torch.Tensor) -> None:
        if bool(self.calibrated):
            return
        self.threshold.fill_(adaptive_threshold(v.amax(0), self.quantile, float(self.threshold)))
        self.calibrated.fill_(True)

    def fire(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """First-spike times (T: none) and potentials there for membrane potentials ``v``."""
        v = self.scaled(v)
        self.calibrate(v)
        t_steps = len(v)
        above = v >= self.threshold
        if self.beta == 1.0 and t_steps < 256:
            # inputs and weights are non-negative, so an IF membrane only rises: count crossings
            # (in uint8: the pointwise reductions below are much cheaper on bytes)
            t_first = t_steps - above.view(torch.uint8).sum(0, dtype=torch.uint8)
        else:
            t_first = first_spike_times(above)
        v_first = v.gather(0, t_first.clamp(max=t_steps - 1).long().unsqueeze(0)).squeeze(0)
        silent = t_first >= t_steps
        if self.pointwise:
            silent = silent.logical_or_(~pointwise_mask(t_first, v_first, t_steps))
        return t_first.long().masked_fill_(silent, t_steps), v_first.masked_fill_(silent, 0.0)

    def run_reset(self, current: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Spikes and potentials ``[T, B, C, H, W]`` with reset to zero (``one_spike=false``)."""
        current = self.scaled(current)
        v, spikes, pots = torch.zeros_like(current[0]), [], []
        for cur in current:
            v = self.beta * v + cur
            pots.append(v)
            s = (v >= self.threshold).to(cur.dtype)
            spikes.append(s)
            v = v * (1 - s)
        return torch.stack(spikes), torch.stack(pots)

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        if not self.one_spike:
            if not bool(self.calibrated):
                self.calibrate(leaky_cumsum(self.scaled(current), self.beta))
            return self.run_reset(current)[0]
        t_first, _ = self.fire(leaky_cumsum(current, self.beta))
        return spike_train(t_first, len(current), current.dtype)


def pool_times(t_first: torch.Tensor, kernel: int = 2) -> torch.Tensor:
    """Earliest spike time in each pooling window."""
    return (-F.max_pool2d(-t_first.float(), kernel)).long()


class FirstSpikePool(nn.Module):
    """2x2 max-pool of spike trains that keeps each pooled unit's earliest spike only.

    It is applied to ``[T*B, C, H, W]`` frames (the backbone folds time), so it knows T.
    """

    def __init__(self, time_steps: int, kernel: int = 2) -> None:
        super().__init__()
        self.time_steps, self.kernel = time_steps, kernel

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        seq = frames.unflatten(0, (self.time_steps, -1))
        pooled = pool_times(first_spike_times(seq), self.kernel)
        return spike_train(pooled, self.time_steps, frames.dtype).flatten(0, 1)


def dog_kernel(sigmas: list[float], size: int) -> torch.Tensor:
    """Zero-sum centre-surround kernel ``[1, 1, size, size]``."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    d2 = r.view(-1, 1) ** 2 + r.view(1, -1) ** 2
    g = [torch.exp(-d2 / (2 * s**2)) for s in sigmas]
    k = g[0] / g[0].sum() - g[1] / g[1].sum()
    return (k - k.mean()).float().view(1, 1, size, size)


class DoGEncoder(nn.Module):
    """Grey image -> on/off DoG maps scaled to [0, 1] per image -> the configured spike code."""

    static = False

    def __init__(self, code: nn.Module, sigmas: list[float], size: int) -> None:
        super().__init__()
        self.code = code
        self.time_steps = code.time_steps
        self.register_buffer("kernel", dog_kernel(sigmas, size))

    def on_off(self, images: torch.Tensor) -> torch.Tensor:
        grey = images.mean(1, keepdim=True)
        pad = self.kernel.shape[-1] // 2
        d = F.conv2d(F.pad(grey, (pad,) * 4, mode="replicate"), self.kernel)
        maps = torch.cat([d.clamp(min=0), (-d).clamp(min=0)], 1)
        return maps / maps.amax((1, 2, 3), keepdim=True).clamp(min=1e-12)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.code(self.on_off(images))


def latency_times(x: torch.Tensor, threshold: float, time_steps: int) -> torch.Tensor:
    """First-spike times ``[B, C, H, W]`` (T: none) of the latency code of ``x``, exactly as
    ``snnrsa.encodings.Encoder`` places its spikes, without building the ``[T, ...]`` trains."""
    x = x.clamp(0.0, 1.0)
    span = max(1.0 - threshold, 1e-12)
    spike_time = torch.round(((1.0 - x) / span).clamp(0.0, 1.0) * (time_steps - 1)).long()
    return spike_time.masked_fill_(x <= threshold, time_steps)


def encode_times(encoder: nn.Module, images: torch.Tensor) -> torch.Tensor | None:
    """Input first-spike times for a latency code (with or without the DoG front end); None for
    codes that may spike more than once (Poisson)."""
    code = encoder.code if isinstance(encoder, DoGEncoder) else encoder
    cfg = getattr(code, "cfg", None)
    if getattr(cfg, "name", None) != "latency":
        return None
    if images.dim() != 4:
        raise ValueError(f"images must be [B, C, H, W], got shape {tuple(images.shape)}")
    x = encoder.on_off(images) if isinstance(encoder, DoGEncoder) else images
    return latency_times(x, cfg.threshold, code.time_steps)


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


def _fold(layer: Any, x: torch.Tensor) -> torch.Tensor:
    return layer(x.flatten(0, 1)).unflatten(0, x.shape[:2])


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


def require_spike_input(cfg: Any) -> None:
    """STDP rules learn from spike timing: latency or Poisson input over >= 2 steps."""
    enc, steps = cfg.encoding.name, cfg.neuron.time_steps
    if enc not in ("latency", "poisson") or steps < 2:
        raise ConfigError(
            f"rule={cfg.rule.name} needs spike input: encoding={enc} with neuron.time_steps="
            f"{steps}; use encoding=latency (or poisson) and neuron.time_steps >= 2"
        )


class STDP(Rule):
    """Greedy layer-wise, batched, competitive conv STDP; it has no class read-out of its own."""

    @classmethod
    def check(cls, cfg: Any) -> None:
        """Spike input (latency or Poisson, >= 2 steps) and a consistent competition setting."""
        rule = cfg.rule
        require_spike_input(cfg)
        if any(not 0 < q < 1 for q in rule.threshold_quantiles):
            raise ConfigError(f"rule.threshold_quantiles={rule.threshold_quantiles} must lie in (0, 1)")
        if rule.pointwise_inhibition and not rule.one_spike:
            raise ConfigError("rule.pointwise_inhibition=true needs rule.one_spike=true")
        if not 0 < rule.beta <= 1:
            raise ConfigError(f"rule.beta={rule.beta} must lie in (0, 1]")
        if not (math.isfinite(rule.homeostasis_rate) and rule.homeostasis_rate >= 0):
            raise ConfigError(f"rule.homeostasis_rate={rule.homeostasis_rate} must be >= 0 (0: off)")
        if not 0 < rule.homeostasis_max < 1:
            raise ConfigError(
                f"rule.homeostasis_max={rule.homeostasis_max} must lie in (0, 1) (the threshold stays > 0)"
            )

    def __init__(self, cfg: Any, net: Network, n_epochs: int) -> None:
        super().__init__(cfg, net, n_epochs)
        enc = net.encoder
        self.time_steps = enc.time_steps
        if cfg.dog:
            net.encoder = DoGEncoder(enc, cfg.dog_sigmas, cfg.dog_size)
        blocks = net.backbone.blocks
        device = blocks[0].conv.weight.device
        adaptive = cfg.threshold_mode == "adaptive"
        for i, block in enumerate(blocks):
            conv = block.conv
            if i == 0 and cfg.dog:
                conv = nn.Conv2d(2, conv.out_channels, conv.kernel_size, padding=conv.padding, bias=False)
            with torch.no_grad():
                conv.weight.normal_(cfg.init_mean, cfg.init_std).clamp_(0, 1)
            conv.weight.requires_grad_(False)
            block.conv = conv.to(device)
            fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
            block.bn = nn.Identity()
            block.neuron = FirstSpikeNeuron(
                _per_layer(cfg.thresholds, i) * fan_in,
                cfg.beta,
                cfg.one_spike,
                cfg.pointwise_inhibition,
                _per_layer(cfg.threshold_quantiles, i) if adaptive else None,
                conv.out_channels if cfg.homeostasis_rate > 0 else None,
            ).to(device)
            if cfg.one_spike:
                block.pool = FirstSpikePool(self.time_steps)
        self.n_layers = len(blocks)
        self.layer = 0
        self.seen = [0] * self.n_layers
        self.wins = [torch.zeros(b.conv.out_channels, dtype=torch.long) for b in blocks]
        self.images = 0
        self.rows: list[dict[str, Any]] = []
        self._last_images: torch.Tensor | None = None
        self._last_weights: list[torch.Tensor] | None = None
        self._last_wins: list[torch.Tensor] = [w.clone() for w in self.wins]
        self.fast_path = True  # False: every layer runs the conv over all T frames (for checks)

    @property
    def weights(self) -> list[torch.Tensor]:
        return [b.conv.weight for b in self.net.backbone.blocks]

    @property
    def done(self) -> bool:
        return self.layer >= self.n_layers

    @torch.no_grad()
    def layer_io(self, images: torch.Tensor, layer: int) -> LayerIO:
        """Input and output first-spike times of conv block ``layer`` for a batch. Between
        layers only the times ``[B, C, H, W]`` travel; each conv runs once on the cumulative
        (leaky) input frames, which gives the membrane potential directly."""
        return self.all_io(images, layer)[layer]

    @torch.no_grad()
    def all_io(self, images: torch.Tensor, last: int | None = None) -> list[LayerIO]:
        """``LayerIO`` of conv blocks 0..``last`` (default: all).

        Calibrated one-spike IF layers with pointwise inhibition take ``pointwise_first_spikes``
        (no time-expanded tensors); the rest run the conv on all T cumulative frames."""
        blocks = self.net.backbone.blocks
        last = len(blocks) - 1 if last is None else last
        steps, beta = self.time_steps, self.cfg.beta
        t_in = encode_times(self.net.encoder, images) if self.cfg.one_spike else None
        x = cum = None
        if t_in is None:
            x = self.net.encoder(images)  # [T, B, C, H, W] input spikes
            t_in, cum = first_spike_times(x), leaky_cumsum(x, beta)
        out: list[LayerIO] = []
        for i, block in enumerate(blocks[: last + 1]):
            neuron = block.neuron
            if self.fast_path and fast_path_ok(block, beta):
                surv = pointwise_first_spikes(
                    t_in.permute(0, 2, 3, 1), gained_weight(block), neuron.threshold, steps
                )
                out.append(LayerIO(t_in.long(), survivors=surv, time_steps=steps))
                if i < last:  # [B, C, H, W] view of channels-last times
                    t_in = survivor_pool(surv, steps, block.pool.kernel).permute(0, 3, 1, 2)
                    cum = None
                continue
            if cum is None:
                cum = (
                    cumulative_frames(t_in, steps, beta, images.dtype)
                    if beta == 1.0
                    else leaky_cumsum(spike_train(t_in.long(), steps, images.dtype), beta)
                )
            if neuron.one_spike:
                t_out, v_out = neuron.fire(_fold(block.conv, cum))
            else:
                current = _fold(block.conv, x)
                if not bool(neuron.calibrated):
                    neuron.calibrate(leaky_cumsum(current, beta))
                spikes, pots = neuron.run_reset(current)
                t_out = first_spike_times(spikes)
                v_out = pots.gather(0, t_out.clamp(max=steps - 1).unsqueeze(0)).squeeze(0)
                v_out = v_out.masked_fill(t_out >= steps, 0.0)
            out.append(LayerIO(t_in.long(), t_out, v_out, time_steps=steps))
            if i < last:
                if neuron.one_spike:
                    t_in, cum = pool_times(t_out), None
                else:
                    x = _fold(block.pool, spikes)
                    t_in, cum = first_spike_times(x), leaky_cumsum(x, beta)
        return out

    @torch.no_grad()
    def calibrate_from(self, images: torch.Tensor, layer: int) -> None:
        """Set the adaptive thresholds of ``layer`` and the layers above from ``images``: called
        when a layer's training starts, since its input has changed with the layers below."""
        for b in self.net.backbone.blocks[layer:]:
            b.neuron.recalibrate()
        self.all_io(images)

    @torch.no_grad()
    def update(self, images: torch.Tensor, layer: int) -> dict[str, Any]:
        """One batched STDP step on ``layer``; returns what the step saw (for dynamics)."""
        cfg, block = self.cfg, self.net.backbone.blocks[layer]
        io = self.layer_io(images, layer)
        k, radius = _per_layer(cfg.k_winners, layer), _per_layer(cfg.inhibition_radius, layer)
        if io.survivors is not None:
            win = survivor_winners(io.survivors, self.time_steps, k, radius)
        else:
            win = k_winners(
                io.t_post, io.v_post, self.time_steps, k, radius, exclusive=block.neuron.pointwise
            )
        w = block.conv.weight
        n_ltp, events = stdp_counts(io.t_pre, win, w.shape[0], w.shape[-1], self.time_steps)
        a_plus, a_minus = learning_rates(cfg, self.seen[layer])
        w.add_(soft_bound_update(w, n_ltp, events, a_plus, a_minus, cfg.reduce)).clamp_(0, 1)
        self.wins[layer] += events.long().cpu()
        self.homeostasis(block.neuron, events)
        return {"io": io, "events": events, "a_plus": a_plus}

    @torch.no_grad()
    def homeostasis(self, neuron: FirstSpikeNeuron, events: torch.Tensor) -> None:
        """Move the training layer's threshold offsets toward equal win shares (see STDPConfig)."""
        rate, total = self.cfg.homeostasis_rate, float(events.sum())
        if neuron.offset is None or rate <= 0 or total <= 0:
            return
        share = events.to(neuron.offset) * (len(events) / total)
        lim = self.cfg.homeostasis_max
        neuron.offset.add_(rate * (share - 1.0)).clamp_(-lim, lim)

    def train_batch(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
        self._last_images = images[:64].detach()
        if self.done:
            return 0.0, 0
        layer = self.layer
        if self.seen[layer] == 0 and self.cfg.threshold_mode == "adaptive":
            self.calibrate_from(images, layer)
        seen = self.update(images, layer)
        n = len(images)
        self.seen[layer] += n
        self.images += n
        c = convergence(self.weights[layer])
        rate, silent = seen["io"].fired_share()
        self.rows.append(
            {
                "images": self.images,
                "layer": layer,
                "a_plus": seen["a_plus"],
                "C": c,
                "threshold": float(self.net.backbone.blocks[layer].neuron.threshold),
                "rate": rate,
                "winners": int((seen["events"] > 0).sum()),
                "silent": silent,
            }
        )
        if self.seen[layer] >= _per_layer(self.cfg.layer_images, layer) or (c < self.cfg.convergence_stop):
            self.layer += 1
        return 0.0, 0

    def log_rows(self) -> list[dict[str, Any]]:
        """Per batch: images seen, layer in training, learning rate, convergence C, threshold,
        firing rate (share of units that spike), WTA winners and the share of silent features."""
        return self.rows

    @torch.no_grad()
    def dynamics(self, bins: int = 20) -> dict[str, np.ndarray]:
        """The rule's state now, per conv layer ``conv<i>_<name>``: weight mean, std, histogram
        (``bins`` fixed bins on [0, 1]), share at the bounds (< 0.01 or > 0.99), C, mean |Δw| and
        max |Δw| since the last call; on the last training batch (up to 64 images): firing rate,
        spike-time histogram (T + 1 bins, the last one silent units), share of silent features;
        WTA winners since the last call (distinct features and wins per feature); Conv1 receptive
        fields ``[C, k, k]`` with their orientation index and preferred orientation."""
        out: dict[str, np.ndarray] = {}
        edges = np.linspace(0.0, 1.0, bins + 1)
        out["weight_bin_edges"] = edges
        weights = [w.detach().double().cpu() for w in self.weights]
        for i, w in enumerate(weights):
            p = f"conv{i + 1}_"
            flat = w.flatten().numpy()
            out[p + "w_mean"] = np.array(flat.mean())
            out[p + "w_std"] = np.array(flat.std())
            out[p + "w_hist"] = np.histogram(flat, edges)[0]
            out[p + "at_bounds"] = np.array(((flat < 0.01) | (flat > 0.99)).mean())
            out[p + "C"] = np.array(convergence(w))
            prev = self._last_weights[i] if self._last_weights else w
            out[p + "dw_mean_abs"] = np.array(float((w - prev).abs().mean()))
            out[p + "dw_max_abs"] = np.array(float((w - prev).abs().max()))
            new_wins = self.wins[i] - self._last_wins[i]
            out[p + "wins"] = new_wins.numpy()
            out[p + "winners"] = np.array(int((new_wins > 0).sum()))
            neuron = self.net.backbone.blocks[i].neuron
            out[p + "threshold"] = np.array(float(neuron.threshold))
            if neuron.offset is not None:  # homeostatic per-feature offsets
                out[p + "threshold_offset"] = neuron.offset.detach().cpu().numpy().copy()
        self._last_weights = weights
        self._last_wins = [w.clone() for w in self.wins]
        if self._last_images is not None:
            was = self.net.training
            ios = self.all_io(self._last_images.to(self.weights[0].device))
            self.net.train(was)
            for i, io in enumerate(ios):
                p = f"conv{i + 1}_"
                t = io.t_post.cpu()
                fired = t < self.time_steps
                out[p + "rate"] = np.array(float(fired.float().mean()))
                out[p + "spike_time_hist"] = torch.bincount(
                    t.flatten(), minlength=self.time_steps + 1
                ).numpy()
                out[p + "silent"] = np.array(float((fired.sum((0, 2, 3)) == 0).float().mean()))
        rf = effective_rf(self.weights[0])
        index, preferred = orientation_tuning(self.weights[0])
        out["conv1_rf"] = rf.numpy()
        out["conv1_orientation_index"] = index
        out["conv1_preferred_orientation"] = preferred
        return out

    def usage(self, layer: int) -> dict[str, float]:
        """How the competition spread over features: share of features that never won, and the
        most-used feature's share of all wins."""
        wins = self.wins[layer].double()
        total = max(float(wins.sum()), 1.0)
        return {
            "never_won": float((wins == 0).double().mean()),
            "max_share": float(wins.max()) / total,
            "events": total,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "seen": list(self.seen),
            "images": self.images,
            "wins": [w.clone() for w in self.wins],
            "offsets": [
                None if b.neuron.offset is None else b.neuron.offset.detach().cpu().clone()
                for b in self.net.backbone.blocks
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.layer, self.seen, self.images = state["layer"], list(state["seen"]), state["images"]
        self.wins = [w.clone() for w in state["wins"]]
        self._last_wins = [w.clone() for w in self.wins]
        for b, off in zip(self.net.backbone.blocks, state.get("offsets", [])):
            if off is not None and b.neuron.offset is not None:
                b.neuron.offset.copy_(off)


def effective_rf(weight: torch.Tensor) -> torch.Tensor:
    """Conv1 kernels as grey pictures ``[C, k, k]``: on minus off for a DoG front end, the channel
    mean for pixel input; the mean is removed so only the spatial pattern counts."""
    w = weight.detach().double().cpu()
    rf = w[:, 0] - w[:, 1] if w.shape[1] == 2 else w.mean(1)
    return rf - rf.mean((1, 2), keepdim=True)


def orientation_tuning(weight: torch.Tensor, pad: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Per kernel, the orientation coherence of its power spectrum (0: isotropic, 1: all power on
    one orientation) and the preferred stimulus orientation in radians [0, π).

    The spectrum is taken zero-padded to ``pad`` so small kernels get a smooth estimate; DC is
    excluded, so the index is phase- and position-invariant (an edge and a bar score alike).
    """
    rf = effective_rf(weight)
    power = torch.fft.fft2(rf, s=(pad, pad)).abs() ** 2
    f = torch.fft.fftfreq(pad, dtype=torch.float64)
    fy, fx = torch.meshgrid(f, f, indexing="ij")
    phase = torch.exp(2j * torch.atan2(fy, fx))
    phase[0, 0] = 0
    vec = (power * phase).sum((1, 2))
    index = vec.abs() / (power.sum((1, 2)) - power[:, 0, 0]).clamp(min=1e-12)
    # power lies across the stimulus' orientation: rotate the frequency angle by 90 degrees
    preferred = torch.remainder(torch.angle(vec) / 2 + math.pi / 2, math.pi)
    return index.numpy(), preferred.numpy()


def orientation_selectivity(weight: torch.Tensor) -> np.ndarray:
    """Per Conv1 kernel, the orientation index of ``orientation_tuning``."""
    return orientation_tuning(weight)[0]


def oriented_bars(
    n: int, size: int, n_orient: int = 4, seed: int = 0, bars: int = 2, width: float = 1.2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``[n, 3, size, size]`` in [0, 1] of thin bright bars on black, all bars of an image at
    one of ``n_orient`` orientations (its label), at random offsets: a stimulus set whose only
    structure is orientation, for checking that Conv1 becomes orientation selective."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(n_orient, (n,), generator=gen)
    theta = labels.double() * math.pi / n_orient
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    img = torch.zeros(n, size, size, dtype=torch.float64)
    for _ in range(bars):
        offset = (torch.rand(n, generator=gen, dtype=torch.float64) - 0.5) * size * 0.8
        dist = (
            xx[None] * torch.cos(theta)[:, None, None]
            + yy[None] * torch.sin(theta)[:, None, None]
            - offset[:, None, None]
        ).abs()
        img = torch.maximum(img, (1.0 - (dist - width / 2).clamp(min=0)).clamp(min=0))
    return img.float().unsqueeze(1).expand(n, 3, size, size).contiguous(), labels

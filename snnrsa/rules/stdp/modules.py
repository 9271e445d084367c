"""The modules canonical STDP builds into the backbone (SpykeTorch's ``snn``): the one-spike IF
neuron, the earliest-spike pool and the on/off difference-of-Gaussians encoder."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from snnrsa.rules.stdp.functional import (
    adaptive_threshold,
    first_spike_times,
    latency_times,
    leaky_cumsum,
    pointwise_mask,
    pool_times,
    spike_train,
)
from snnrsa.schema import ConfigError


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

    def fire(self, v: torch.Tensor, pointwise: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """First-spike times (T: none) and potentials there for membrane potentials ``v``;
        ``pointwise`` (default: the neuron's setting) keeps only the earliest feature per position."""
        pointwise = self.pointwise if pointwise is None else pointwise
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
        if pointwise:
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


class FirstSpikePool(nn.Module):
    """2x2 stride-2 max-pool of spike trains that keeps each pooled unit's earliest spike only
    (``padding``: SpykeTorch's pooling padding; padded cells never spike).

    It is applied to ``[T*B, C, H, W]`` frames (the backbone folds time), so it knows T.
    """

    def __init__(self, time_steps: int, kernel: int = 2, padding: int = 0) -> None:
        super().__init__()
        self.time_steps, self.kernel, self.padding = time_steps, kernel, padding

    def times(self, t_first: torch.Tensor) -> torch.Tensor:
        """Pooled first-spike times of ``[B, C, H, W]`` times."""
        return pool_times(t_first, self.kernel, self.padding)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        seq = frames.unflatten(0, (self.time_steps, -1))
        pooled = self.times(first_spike_times(seq))
        return spike_train(pooled, self.time_steps, frames.dtype).flatten(0, 1)


def dog_kernel(sigmas: list[float], size: int) -> torch.Tensor:
    """Zero-sum centre-surround kernel ``[1, 1, size, size]``."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    d2 = r.view(-1, 1) ** 2 + r.view(1, -1) ** 2
    g = [torch.exp(-d2 / (2 * s**2)) for s in sigmas]
    k = g[0] / g[0].sum() - g[1] / g[1].sum()
    return (k - k.mean()).float().view(1, 1, size, size)


def to_input_size(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """Images resampled to the front end's fixed ``size`` (None: as given). A DoG of fixed width
    and kernels learnt at one scale mean the network has a fixed retina: a 224-px upsampling of
    a 32-px picture would give DoG responses below the drop threshold and silence conv1."""
    if size is None or images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=images.shape[-1] > size)


def check_input_size(cfg: Any) -> None:
    """The DoG front end's retina (``rule.input_size``) is null or at least the DoG's width."""
    size, dog = cfg.rule.input_size, cfg.rule.dog_size
    if size is not None and size < dog:
        raise ConfigError(f"rule.input_size={size} must be null (images as given) or at least "
                          f"rule.dog_size={dog} pixels")


class DoGEncoder(nn.Module):
    """Grey image (at ``input_size``) -> on/off DoG maps scaled to [0, 1] per image -> the
    configured spike code."""

    static = False

    def __init__(self, code: nn.Module, sigmas: list[float], size: int,
                 input_size: int | None = None) -> None:
        super().__init__()
        self.code = code
        self.time_steps = code.time_steps
        self.input_size = input_size
        self.register_buffer("kernel", dog_kernel(sigmas, size))

    def on_off(self, images: torch.Tensor) -> torch.Tensor:
        grey = to_input_size(images, self.input_size).mean(1, keepdim=True)
        pad = self.kernel.shape[-1] // 2
        d = F.conv2d(F.pad(grey, (pad,) * 4, mode="replicate"), self.kernel)
        maps = torch.cat([d.clamp(min=0), (-d).clamp(min=0)], 1)
        return maps / maps.amax((1, 2, 3), keepdim=True).clamp(min=1e-12)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.code(self.on_off(images))


def recipe_dog_kernels(sigmas: list[float], size: int) -> torch.Tensor:
    """SpykeTorch's ``DoGKernel(size, s1, s2)`` and ``DoGKernel(size, s2, s1)`` (on- and
    off-centre), each mean-removed and divided by its maximum: ``[2, 1, size, size]``."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    d2 = r.view(-1, 1) ** 2 + r.view(1, -1) ** 2

    def dog(s1: float, s2: float) -> torch.Tensor:
        k = (torch.exp(-d2 / (2 * s1**2)) / s1**2 - torch.exp(-d2 / (2 * s2**2)) / s2**2) / (2 * math.pi)
        k = k - k.mean()
        return k / k.max()

    s1, s2 = sigmas
    return torch.stack([dog(s1, s2), dog(s2, s1)]).float().unsqueeze(1)


def rank_order_times(x: torch.Tensor, time_steps: int) -> torch.Tensor:
    """SpykeTorch's ``Intensity2Latency``: per image, the non-zero values of ``x`` ``[B, C, H, W]``
    sorted in decreasing order and cut into ``time_steps`` bins of nnz // T values each; bin i
    spikes at step i, the remainder (the weakest nnz mod T values) and zeros never (time T).
    Fewer non-zero values than bins: one value per bin. Ties keep the flat order (stable sort)."""
    b = x.shape[0]
    flat = x.reshape(b, -1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    nnz = (flat > 0).sum(1, keepdim=True)
    bin_size = (nnz // time_steps).clamp(min=1)
    rank = torch.arange(flat.shape[1], device=x.device).unsqueeze(0)
    t_sorted = (rank // bin_size).masked_fill_((rank >= nnz) | (rank // bin_size >= time_steps), time_steps)
    times = torch.empty_like(t_sorted).scatter_(1, order, t_sorted)
    return times.view_as(x)


class RankOrderEncoder(nn.Module):
    """The recipe's front end (Kheradpisheh et al. 2018 in SpykeTorch): grey image (resampled to
    ``input_size``, as the recipe resizes its images) on a 0-255 scale -> on- and off-centre DoG
    kernels -> responses below ``threshold`` dropped -> local normalisation (divided by the mean
    over a (2r+1)^2 window) -> rank-order spike times over ``time_steps`` bins.
    ``forward`` gives one-spike trains ``[T, B, 2, H, W]``."""

    static = False

    def __init__(self, time_steps: int, sigmas: list[float], size: int, threshold: float,
                 padding: str, radius: int, input_size: int | None = None) -> None:
        super().__init__()
        self.time_steps, self.threshold, self.padding, self.radius = time_steps, threshold, padding, radius
        self.input_size = input_size
        self.register_buffer("kernel", recipe_dog_kernels(sigmas, size))

    def intensities(self, images: torch.Tensor) -> torch.Tensor:
        """The normalised DoG maps ``[B, 2, H, W]`` that the rank-order code sorts."""
        if images.dim() != 4:
            raise ValueError(f"images must be [B, C, H, W], got shape {tuple(images.shape)}")
        grey = to_input_size(images, self.input_size).clamp(0, 1).mean(1, keepdim=True) * 255.0
        pad = self.kernel.shape[-1] // 2
        mode = "constant" if self.padding == "zero" else "replicate"
        d = F.conv2d(F.pad(grey, (pad,) * 4, mode=mode), self.kernel)
        d = torch.where(d < self.threshold, torch.zeros((), device=d.device), d)
        if self.radius > 0:
            n = 2 * self.radius + 1
            mean = F.avg_pool2d(d, n, stride=1, padding=self.radius, count_include_pad=True)
            d = d / (mean + 1e-12)
        return d

    def times(self, images: torch.Tensor) -> torch.Tensor:
        return rank_order_times(self.intensities(images), self.time_steps)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return spike_train(self.times(images), self.time_steps, images.dtype)


def encode_times(encoder: nn.Module, images: torch.Tensor) -> torch.Tensor | None:
    """Input first-spike times for a rank-order or latency code (with or without the DoG front
    end); None for codes that may spike more than once (Poisson)."""
    if isinstance(encoder, RankOrderEncoder):
        return encoder.times(images)
    code = encoder.code if isinstance(encoder, DoGEncoder) else encoder
    cfg = getattr(code, "cfg", None)
    if getattr(cfg, "name", None) != "latency":
        return None
    if images.dim() != 4:
        raise ValueError(f"images must be [B, C, H, W], got shape {tuple(images.shape)}")
    x = encoder.on_off(images) if isinstance(encoder, DoGEncoder) else images
    return latency_times(x, cfg.threshold, code.time_steps)

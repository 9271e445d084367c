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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from snnrsa.network import Network
from snnrsa.rules.base import Rule


@dataclass
class STDPConfig:
    name: str = "stdp"
    # Firing threshold per conv layer, as a fraction of the layer's fan-in (C_in * k * k); a layer
    # without an entry uses the last one.
    thresholds: list[float] = field(default_factory=lambda: [0.2, 0.2, 0.2])
    beta: float = 1.0  # membrane decay per step: 1 is integrate-and-fire (the recipe), < 1 leaky
    one_spike: bool = True  # at most one spike per neuron per image (time-to-first-spike code)
    pointwise_inhibition: bool = True  # per position, only the earliest feature fires
    k_winners: list[int] = field(default_factory=lambda: [5, 8, 8])  # per layer, per image
    inhibition_radius: list[int] = field(default_factory=lambda: [2, 1, 1])  # k-WTA, in pixels
    a_plus: float = 0.004
    a_minus: float = 0.003
    a_plus_max: float = 0.15  # the ramp stops here; a_minus keeps its ratio to a_plus
    ramp_every: int = 500  # training images of a layer between learning-rate doublings
    ramp_factor: float = 2.0
    reduce: str = "sum"  # sum | mean: a feature's updates over the images of a batch it won in
    layer_images: list[int] = field(default_factory=lambda: [4000, 4000, 4000])  # greedy schedule
    convergence_stop: float = 0.0  # move to the next layer once C = mean(w(1-w)) < this; 0: off
    init_mean: float = 0.8
    init_std: float = 0.05
    dog: bool = True  # on/off difference-of-Gaussians front end (conv1 then has 2 input channels)
    dog_sigmas: list[float] = field(default_factory=lambda: [1.0, 2.0])  # centre, surround
    dog_size: int = 7


def _per_layer(values: list, i: int) -> Any:
    return values[min(i, len(values) - 1)]


def convergence(w: torch.Tensor) -> float:
    """C = mean(w(1-w)): 0 when every weight sits at a bound (the recipe's stopping measure)."""
    return float((w * (1 - w)).mean())


def first_spike_times(spikes: torch.Tensor) -> torch.Tensor:
    """Index of each unit's first spike over the leading time axis; T where it never fires."""
    t = spikes.shape[0]
    steps = torch.arange(t, device=spikes.device, dtype=spikes.dtype).view(-1, *[1] * (
        spikes.dim() - 1))
    # a min over the leading axis; argmax there is a strided reduction, ~30x slower on CPU
    return torch.where(spikes > 0, steps, float(t)).amin(0).long()


def spike_train(t_first: torch.Tensor, time_steps: int, dtype: torch.dtype) -> torch.Tensor:
    """One spike per unit at ``t_first`` (none where it equals T), as ``[T, ...]``."""
    steps = torch.arange(time_steps, device=t_first.device).view(-1, *[1] * t_first.dim())
    return (steps == t_first.unsqueeze(0)).to(dtype)


class FirstSpikeNeuron(nn.Module):
    """IF/LIF neurons driven by per-step currents; ``run`` also returns the membrane potential.

    With ``one_spike`` the membrane is never reset: the first threshold crossing is the only spike,
    so the potential is a (leaky) cumulative sum computed without a time loop.
    """

    spiking = True

    def __init__(self, threshold: float, beta: float, one_spike: bool, pointwise: bool) -> None:
        super().__init__()
        self.threshold, self.beta = threshold, beta
        self.one_spike, self.pointwise = one_spike, pointwise

    def potential(self, current: torch.Tensor) -> torch.Tensor:
        """Membrane potential without reset: a leaky running sum, stepped in place over time
        (a strided cumsum over the leading axis is several times slower on CPU)."""
        v = current.clone()
        for t in range(1, len(v)):
            v[t].add_(v[t - 1], alpha=self.beta)
        return v

    def run(self, current: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Spikes and potentials ``[T, B, C, H, W]`` for input currents of the same shape."""
        if not self.one_spike:
            v, spikes, pots = torch.zeros_like(current[0]), [], []
            for cur in current:
                v = self.beta * v + cur
                pots.append(v)
                s = (v >= self.threshold).to(cur.dtype)
                spikes.append(s)
                v = v * (1 - s)
            return torch.stack(spikes), torch.stack(pots)
        v = self.potential(current)
        spikes = spike_train(first_spike_times((v >= self.threshold).to(v.dtype)), len(v),
                             v.dtype)
        if self.pointwise:
            spikes = spikes * pointwise_winner(spikes, v).unsqueeze(0)
        return spikes, v

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        return self.run(current)[0]


def spike_rank(spikes: torch.Tensor, potential: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First-spike time and the potential at that time per unit (0 where it never fires)."""
    t_first = first_spike_times(spikes)
    idx = t_first.clamp(max=spikes.shape[0] - 1).unsqueeze(0)
    v_first = potential.gather(0, idx).squeeze(0)
    return t_first, torch.where(t_first < spikes.shape[0], v_first, torch.zeros_like(v_first))


def pointwise_winner(spikes: torch.Tensor, potential: torch.Tensor) -> torch.Tensor:
    """Mask ``[B, C, H, W]`` keeping, per position, the feature that fires first (ties: the larger
    potential at that time, then the lower index)."""
    t_first, v_first = spike_rank(spikes, potential)
    earliest = t_first.min(1, keepdim=True).values
    score = torch.where(t_first == earliest, v_first, torch.full_like(v_first, -1.0))
    best = score.argmax(1, keepdim=True)
    chans = torch.arange(spikes.shape[2], device=spikes.device).view(1, -1, 1, 1)
    return (chans == best).to(spikes.dtype)


class FirstSpikePool(nn.Module):
    """2x2 max-pool of spike trains that keeps each pooled unit's earliest spike only.

    It is applied to ``[T*B, C, H, W]`` frames (the backbone folds time), so it knows T.
    """

    def __init__(self, time_steps: int, kernel: int = 2) -> None:
        super().__init__()
        self.time_steps, self.kernel = time_steps, kernel

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        seq = frames.unflatten(0, (self.time_steps, -1))
        t_first = first_spike_times(seq).to(frames.dtype)
        pooled = -F.max_pool2d(-t_first, self.kernel)
        return spike_train(pooled.long(), self.time_steps, frames.dtype).flatten(0, 1)


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


@dataclass
class Winners:
    """k-WTA winners of one layer, flattened over the batch."""

    image: torch.Tensor
    feature: torch.Tensor
    y: torch.Tensor
    x: torch.Tensor
    time: torch.Tensor


def k_winners(spikes: torch.Tensor, potential: torch.Tensor, k: int, radius: int) -> Winners:
    """Per image, up to k winners: repeatedly the earliest-firing neuron (ties: larger potential,
    then lower flat index); its feature map and a (2r+1)^2 neighbourhood in every map drop out."""
    t, b, c, h, w = spikes.shape
    t_first, v_first = spike_rank(spikes, potential)
    avail = t_first < t
    ys = torch.arange(h, device=spikes.device).view(1, 1, h, 1)
    xs = torch.arange(w, device=spikes.device).view(1, 1, 1, w)
    chans = torch.arange(c, device=spikes.device).view(1, c, 1, 1)
    rows = torch.arange(b, device=spikes.device)
    found: list[tuple[torch.Tensor, ...]] = []
    big = torch.full_like(t_first, t)
    for _ in range(k):
        t_av = torch.where(avail, t_first, big)
        earliest = t_av.flatten(1).min(1).values
        ok = earliest < t
        score = torch.where(avail & (t_first == earliest.view(-1, 1, 1, 1)), v_first,
                            torch.full_like(v_first, -1.0))
        flat = score.flatten(1).argmax(1)
        f, rem = flat // (h * w), flat % (h * w)
        yy, xx = rem // w, rem % w
        found.append((rows[ok], f[ok], yy[ok], xx[ok], earliest[ok]))
        drop = (chans == f.view(-1, 1, 1, 1)) | (
            ((ys - yy.view(-1, 1, 1, 1)).abs() <= radius)
            & ((xs - xx.view(-1, 1, 1, 1)).abs() <= radius)
        )
        avail = avail & ~(drop & ok.view(-1, 1, 1, 1))
    parts = [torch.cat([f[i] for f in found]) for i in range(5)]
    return Winners(*parts)


def stdp_counts(
    pre_spikes: torch.Tensor, win: Winners, n_features: int, kernel: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per feature and weight: how many winning events had that input spike no later than the
    winner (LTP), and how many events each feature had. Inputs are ``[T, B, C_in, H, W]``."""
    t = pre_spikes.shape[0]
    t_pre = first_spike_times(pre_spikes).to(pre_spikes.dtype)
    pad = kernel // 2
    padded = F.pad(t_pre, (pad,) * 4, value=float(t))
    offs = torch.arange(kernel, device=padded.device)
    chans = torch.arange(padded.shape[1], device=padded.device)
    patches = padded[win.image.view(-1, 1, 1, 1), chans.view(1, -1, 1, 1),
                     (win.y.view(-1, 1) + offs).view(-1, 1, kernel, 1),
                     (win.x.view(-1, 1) + offs).view(-1, 1, 1, kernel)].flatten(1)
    ltp = (patches <= win.time.to(patches.dtype).unsqueeze(1)).to(pre_spikes.dtype)
    n_ltp = torch.zeros(n_features, patches.shape[1], dtype=pre_spikes.dtype,
                        device=pre_spikes.device).index_add_(0, win.feature, ltp)
    events = torch.bincount(win.feature, minlength=n_features).to(pre_spikes.dtype)
    return n_ltp, events


def soft_bound_update(
    w: torch.Tensor, n_ltp: torch.Tensor, events: torch.Tensor, a_plus: float, a_minus: float,
    reduce: str,
) -> torch.Tensor:
    """Δw = w(1-w)·(a⁺·#LTP − a⁻·#LTD), summed over events or averaged per feature."""
    drive = a_plus * n_ltp - a_minus * (events.unsqueeze(1) - n_ltp)
    if reduce == "mean":
        drive = drive / events.clamp(min=1).unsqueeze(1)
    return w * (1 - w) * drive.view_as(w)


def learning_rates(cfg: STDPConfig, images_seen: int) -> tuple[float, float]:
    """a⁺ and a⁻ after ``images_seen`` images of the current layer (the doubling ramp)."""
    a_plus = min(cfg.a_plus * cfg.ramp_factor ** (images_seen // cfg.ramp_every), cfg.a_plus_max)
    return a_plus, a_plus * cfg.a_minus / cfg.a_plus


def _fold(layer: Any, x: torch.Tensor) -> torch.Tensor:
    return layer(x.flatten(0, 1)).unflatten(0, x.shape[:2])


class STDP(Rule):
    """Greedy layer-wise, batched, competitive conv STDP; it has no class read-out of its own."""

    schema = STDPConfig

    def __init__(self, cfg: Any, net: Network, n_epochs: int) -> None:
        super().__init__(cfg, net, n_epochs)
        if cfg.reduce not in ("sum", "mean"):
            raise ValueError(f"rule.reduce={cfg.reduce!r} is not one of sum, mean")
        enc = net.encoder
        if enc.cfg.name not in ("latency", "poisson") or enc.time_steps < 2:
            raise ValueError(
                f"rule=stdp needs spike input: encoding={enc.cfg.name} with "
                f"neuron.time_steps={enc.time_steps}; use encoding=latency (or poisson) and "
                "neuron.time_steps >= 2"
            )
        if cfg.pointwise_inhibition and not cfg.one_spike:
            raise ValueError("rule.pointwise_inhibition=true needs rule.one_spike=true")
        self.time_steps = enc.time_steps
        if cfg.dog:
            net.encoder = DoGEncoder(enc, cfg.dog_sigmas, cfg.dog_size)
        blocks = net.backbone.blocks
        device = blocks[0].conv.weight.device
        for i, block in enumerate(blocks):
            conv = block.conv
            if i == 0 and cfg.dog:
                conv = nn.Conv2d(2, conv.out_channels, conv.kernel_size, padding=conv.padding,
                                 bias=False)
            with torch.no_grad():
                conv.weight.normal_(cfg.init_mean, cfg.init_std).clamp_(0, 1)
            conv.weight.requires_grad_(False)
            block.conv = conv.to(device)
            fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
            block.bn = nn.Identity()
            block.neuron = FirstSpikeNeuron(_per_layer(cfg.thresholds, i) * fan_in, cfg.beta,
                                            cfg.one_spike, cfg.pointwise_inhibition)
            if cfg.one_spike:
                block.pool = FirstSpikePool(self.time_steps)
        self.n_layers = len(blocks)
        self.layer = 0
        self.seen = [0] * self.n_layers
        self.wins = [torch.zeros(b.conv.out_channels, dtype=torch.long) for b in blocks]
        self.images = 0
        self.rows: list[dict[str, Any]] = []

    @property
    def weights(self) -> list[torch.Tensor]:
        return [b.conv.weight for b in self.net.backbone.blocks]

    @property
    def done(self) -> bool:
        return self.layer >= self.n_layers

    @torch.no_grad()
    def layer_io(self, images: torch.Tensor, layer: int) -> tuple[torch.Tensor, ...]:
        """Input spikes, output spikes and potentials of conv block ``layer`` for a batch."""
        x = self.net.encoder(images)
        for i, block in enumerate(self.net.backbone.blocks[: layer + 1]):
            spikes, v = block.neuron.run(_fold(block.conv, x))
            if i == layer:
                return x, spikes, v
            x = _fold(block.pool, spikes)
        raise IndexError(layer)

    @torch.no_grad()
    def update(self, images: torch.Tensor, layer: int) -> dict[str, Any]:
        """One batched STDP step on ``layer``; returns what the step saw (for dynamics)."""
        cfg, block = self.cfg, self.net.backbone.blocks[layer]
        pre, spikes, v = self.layer_io(images, layer)
        win = k_winners(spikes, v, _per_layer(cfg.k_winners, layer),
                        _per_layer(cfg.inhibition_radius, layer))
        w = block.conv.weight
        n_ltp, events = stdp_counts(pre, win, w.shape[0], w.shape[-1])
        a_plus, a_minus = learning_rates(cfg, self.seen[layer])
        w.add_(soft_bound_update(w, n_ltp, events, a_plus, a_minus, cfg.reduce)).clamp_(0, 1)
        self.wins[layer] += events.long().cpu()
        return {"spikes": spikes, "events": events, "a_plus": a_plus}

    def train_batch(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
        if self.done:
            return 0.0, 0
        layer = self.layer
        seen = self.update(images, layer)
        n = len(images)
        self.seen[layer] += n
        self.images += n
        c = convergence(self.weights[layer])
        spikes = seen["spikes"]
        self.rows.append({
            "images": self.images, "layer": layer, "a_plus": seen["a_plus"], "C": c,
            "rate": float(spikes.sum(0).mean()),
            "winners": int((seen["events"] > 0).sum()),
            "silent": float((spikes.sum((0, 1, 3, 4)) == 0).float().mean()),
        })
        if self.seen[layer] >= _per_layer(self.cfg.layer_images, layer) or (
            c < self.cfg.convergence_stop
        ):
            self.layer += 1
        return 0.0, 0

    def log_rows(self) -> list[dict[str, Any]]:
        """Per batch: images seen, layer in training, learning rate, convergence C, firing rate,
        WTA winners and the share of silent features."""
        return self.rows

    def usage(self, layer: int) -> dict[str, float]:
        """How the competition spread over features: share of features that never won, and the
        most-used feature's share of all wins."""
        wins = self.wins[layer].double()
        total = max(float(wins.sum()), 1.0)
        return {"never_won": float((wins == 0).double().mean()),
                "max_share": float(wins.max()) / total, "events": total}

    def state_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "seen": list(self.seen), "images": self.images,
                "wins": [w.clone() for w in self.wins]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.layer, self.seen, self.images = state["layer"], list(state["seen"]), state["images"]
        self.wins = [w.clone() for w in state["wins"]]


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
        dist = (xx[None] * torch.cos(theta)[:, None, None] + yy[None] * torch.sin(theta)[
            :, None, None] - offset[:, None, None]).abs()
        img = torch.maximum(img, (1.0 - (dist - width / 2).clamp(min=0)).clamp(min=0))
    return img.float().unsqueeze(1).expand(n, 3, size, size).contiguous(), labels

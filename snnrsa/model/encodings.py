"""Input encodings: images in [0, 1] to input sequences ``[T, B, C, H, W]`` on the model's device.

analog feeds the normalised image as a constant current at every step; poisson draws Bernoulli
spikes with probability ``p_max * intensity``; latency fires one spike per pixel, earlier for
brighter pixels (time-to-first-spike), none at or below ``threshold``.
"""

from __future__ import annotations

import torch
from torch import nn

from snnrsa.schema import EncodingConfig


class Encoder(nn.Module):
    """Turns a batch of [0, 1] images into T input frames; normalisation stats travel as buffers."""

    def __init__(self, cfg: EncodingConfig, time_steps: int, mean: list[float], std: list[float]):
        super().__init__()
        self.cfg = cfg
        self.time_steps = time_steps
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    @property
    def static(self) -> bool:
        """True when every frame is the same (analog): the first convolution can run once."""
        return self.cfg.name == "analog"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4:
            raise ValueError(f"images must be [B, C, H, W], got shape {tuple(images.shape)}")
        t = self.time_steps
        if self.cfg.name == "analog":
            x = self.cfg.gain * (images - self.mean) / self.std
            return x.unsqueeze(0).expand(t, *x.shape)
        x = images.clamp(0.0, 1.0)
        if self.cfg.name == "poisson":
            prob = (self.cfg.p_max * x).unsqueeze(0).expand(t, *x.shape)
            return torch.bernoulli(prob)
        if self.cfg.name == "latency":
            # intensity 1 fires at step 0, intensity just above threshold at step T-1
            span = max(1.0 - self.cfg.threshold, 1e-12)
            frac = ((1.0 - x) / span).clamp(0.0, 1.0)
            spike_time = torch.round(frac * (t - 1)).long()
            steps = torch.arange(t, device=x.device).view(t, 1, 1, 1, 1)
            fires = (x > self.cfg.threshold).unsqueeze(0)
            return ((steps == spike_time.unsqueeze(0)) & fires).to(x.dtype)
        raise ValueError(f"encoding.name={self.cfg.name!r} is not one of analog, poisson, latency")

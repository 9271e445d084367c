"""Test stimuli with known structure."""

from __future__ import annotations

import math

import torch


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

"""Receptive-field analysis of learnt Conv1 kernels: effective (on - off) fields and orientation
tuning (used by the rule's snapshots and ``tools/stdp_figures.py``)."""

from __future__ import annotations

import math

import numpy as np
import torch


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

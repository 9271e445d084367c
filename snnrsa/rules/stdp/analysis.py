"""Receptive-field analysis of learnt Conv1 kernels: effective (on - off) fields, orientation
tuning and the grating OSI (used by the rule's snapshots and ``tools/stdp_figures.py``)."""

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


def grating_osi(weight: torch.Tensor, n_orientations: int = 16) -> np.ndarray:
    """Per kernel, the physiologists' orientation selectivity index (e.g. Niell & Stryker 2008),
    (R_pref - R_orth) / (R_pref + R_orth), with R the effective field's response amplitude to a
    full-field sinusoidal grating at its best phase, both taken at the preferred spatial frequency
    (0.05-0.5 cycles per pixel). Reported beside ``orientation_tuning``'s index, whose ceiling for
    a 5 x 5 step edge is 0.60: here an ideal edge scores 1 and the value reads as in physiology.
    """
    rf = effective_rf(weight)
    k = rf.shape[-1]
    ys, xs = torch.meshgrid(*(torch.arange(k, dtype=torch.float64),) * 2, indexing="ij")
    theta = torch.arange(n_orientations, dtype=torch.float64) * math.pi / n_orientations
    freq = torch.linspace(0.05, 0.5, 19, dtype=torch.float64)
    # amplitude at the best phase of a linear field = |<rf, exp(2 pi i f (x cos t + y sin t))>|
    proj = (xs[None, None] * theta.cos()[:, None, None, None]
            + ys[None, None] * theta.sin()[:, None, None, None]) * freq[None, :, None, None]
    amp = torch.einsum("cyx,tfyx->ctf", rf.to(torch.complex128), torch.exp(2j * math.pi * proj)).abs()
    best = amp.flatten(1).argmax(1)
    t, f = best // len(freq), best % len(freq)
    c = torch.arange(len(rf))
    pref, orth = amp[c, t, f], amp[c, (t + n_orientations // 2) % n_orientations, f]
    return ((pref - orth) / (pref + orth).clamp(min=1e-12)).numpy()


def orientation_selectivity(weight: torch.Tensor) -> np.ndarray:
    """Per Conv1 kernel, the orientation index of ``orientation_tuning``."""
    return orientation_tuning(weight)[0]

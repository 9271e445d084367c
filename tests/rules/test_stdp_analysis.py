"""The grating OSI of Conv1 kernels against explicit gratings and closed-form cases."""

from __future__ import annotations

import math

import numpy as np
import torch

from snnrsa.rules.stdp.analysis import effective_rf, grating_osi


def _explicit_osi(weight: torch.Tensor, n_orientations: int = 16, n_phases: int = 256) -> np.ndarray:
    """The same index from real cosine gratings, the best of ``n_phases`` phases (no Fourier)."""
    rf = effective_rf(weight)
    k = rf.shape[-1]
    ys, xs = torch.meshgrid(*(torch.arange(k, dtype=torch.float64),) * 2, indexing="ij")
    out = np.zeros((len(rf), n_orientations, 19))
    for i in range(n_orientations):
        t = i * math.pi / n_orientations
        for j, f in enumerate(np.linspace(0.05, 0.5, 19)):
            for p in np.arange(n_phases) * 2 * math.pi / n_phases:
                g = torch.cos(2 * math.pi * f * (xs * math.cos(t) + ys * math.sin(t)) + p)
                out[:, i, j] = np.maximum(out[:, i, j], (rf * g).sum((1, 2)).numpy())
    best = out.reshape(len(rf), -1).argmax(1)
    t, f = np.divmod(best, 19)
    c = np.arange(len(rf))
    pref, orth = out[c, t, f], out[c, (t + n_orientations // 2) % n_orientations, f]
    return (pref - orth) / (pref + orth)


def test_grating_osi_matches_explicit_gratings():
    w = torch.rand(6, 2, 5, 5, generator=torch.Generator().manual_seed(3))
    np.testing.assert_allclose(grating_osi(w), _explicit_osi(w), atol=2e-3)


def test_grating_osi_closed_form_cases():
    k = 5
    ys, xs = torch.meshgrid(*(torch.arange(k, dtype=torch.float64) - 2,) * 2, indexing="ij")
    # invariant under a 90-degree rotation: every grating and its orthogonal one respond alike
    dog = torch.exp(-(xs**2 + ys**2) / 2) - 0.5 * torch.exp(-(xs**2 + ys**2) / 8)
    # a vertical step edge: a vertical grating drives it, a horizontal one only through its mean
    edge = (xs < 0).double()
    kernels = torch.stack([dog, edge])[:, None].float()  # one channel: the field is the kernel
    osi = grating_osi(kernels)
    assert abs(osi[0]) < 1e-9
    assert osi[1] > 0.99

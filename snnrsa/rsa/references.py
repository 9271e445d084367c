"""Low-level reference RDMs computed from the stimulus images, for partial RSA and sanity checks.

Early visual cortex tracks image statistics; these RDMs say how much of a model's V1 score such
statistics alone would earn. Images are (n, H, W, 3) floats (any common scale: every RDM here is
invariant to it except luminance and mean RGB, which are in the images' units).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.signal import fftconvolve

from snnrsa.rsa._arrays import to_numpy
from snnrsa.rsa.rdm import compute_rdm

# ITU-R BT.709 relative-luminance weights for linear RGB.
LUMA = np.array([0.2126, 0.7152, 0.0722])


def _images(images: Any) -> np.ndarray:
    x = to_numpy(images, "images")
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images must be (n, H, W, 3), got shape {x.shape}")
    if len(x) < 3:
        raise ValueError(f"images must hold at least 3 images, got {len(x)}")
    if not np.isfinite(x).all():
        raise ValueError("images contain NaN or infinite values")
    return x


def _abs_diff(values: np.ndarray) -> np.ndarray:
    return np.abs(values[:, None] - values[None, :])


def pixel_rdm(images: Any) -> np.ndarray:
    """1 - Pearson r between the images' raw pixel vectors (all channels)."""
    x = _images(images)
    return compute_rdm(x.reshape(len(x), -1), "correlation")


def luminance_rdm(images: Any) -> np.ndarray:
    """|difference| in mean luminance (BT.709 weights)."""
    return _abs_diff((_images(images) @ LUMA).mean(axis=(1, 2)))


def mean_rgb_rdm(images: Any) -> np.ndarray:
    """Euclidean distance between the images' mean RGB colours."""
    return compute_rdm(_images(images).mean(axis=(1, 2)), "euclidean")


def gabor_bank(
    size: int, wavelengths: tuple[float, ...], n_orientations: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Quadrature pairs (even, odd) of Gabor kernels: one-octave bandwidth, aspect ratio 0.5."""
    bank = []
    for lam in wavelengths:
        sigma = 0.56 * lam
        half = min(int(np.ceil(3 * sigma)), size // 2)
        y, x = np.mgrid[-half : half + 1, -half : half + 1].astype(float)
        for k in range(n_orientations):
            theta = np.pi * k / n_orientations
            xr = x * np.cos(theta) + y * np.sin(theta)
            yr = -x * np.sin(theta) + y * np.cos(theta)
            env = np.exp(-(xr**2 + 0.25 * yr**2) / (2 * sigma**2))
            even = env * np.cos(2 * np.pi * xr / lam)
            even -= even.mean()
            odd = env * np.sin(2 * np.pi * xr / lam)
            norm = np.sqrt((even**2).sum() + (odd**2).sum())
            bank.append((even / norm, odd / norm))
    return bank


def gabor_energy_features(
    images: Any,
    *,
    wavelength_fractions: tuple[float, ...] = (1 / 4, 1 / 8, 1 / 16),
    n_orientations: int = 4,
    grid: int = 4,
) -> np.ndarray:
    """(n, filters * grid^2) complex-cell energies sqrt(even^2 + odd^2), averaged over a grid.

    A V1-like model: grayscale (BT.709) images filtered by a Gabor bank whose wavelengths are
    fractions of the shorter image side, pooled over grid x grid spatial cells.
    """
    x = _images(images) @ LUMA
    n, h, w = x.shape
    if grid < 1 or h < grid or w < grid:
        raise ValueError(f"grid must be in 1..{min(h, w)} for {h}x{w} images, got {grid}")
    lam = tuple(max(2.0, f * min(h, w)) for f in wavelength_fractions)
    feats = []
    for even, odd in gabor_bank(min(h, w), lam, n_orientations):
        e = fftconvolve(x, even[None], mode="same", axes=(1, 2))
        o = fftconvolve(x, odd[None], mode="same", axes=(1, 2))
        energy = np.sqrt(e**2 + o**2)
        hh, ww = h - h % grid, w - w % grid
        cells = energy[:, :hh, :ww].reshape(n, grid, hh // grid, grid, ww // grid)
        feats.append(cells.mean(axis=(2, 4)).reshape(n, -1))
    return np.concatenate(feats, axis=1)


def gabor_energy_rdm(images: Any, **kwargs: Any) -> np.ndarray:
    """1 - Pearson r between Gabor-energy feature vectors (see `gabor_energy_features`)."""
    return compute_rdm(gabor_energy_features(images, **kwargs), "correlation")


def reference_rdms(images: Any) -> dict[str, np.ndarray]:
    """All built-in reference RDMs by name: pixel, luminance, mean_rgb, gabor_energy."""
    return {
        "pixel": pixel_rdm(images),
        "luminance": luminance_rdm(images),
        "mean_rgb": mean_rgb_rdm(images),
        "gabor_energy": gabor_energy_rdm(images),
    }

"""The ground-truth encoding model of the synthetic brain: what each ROI "computes" from an image.

Early ROIs (V1, V2, V3): each voxel has one receptive field, a cell of a grid x grid raster that
coarsens along the hierarchy, and pools two kinds of local channel there: oriented contrast
energy (the amplitude of a quadrature-pair Gabor filter of the luminance; the preferred spatial
frequency in cycles per image falls along the hierarchy) and the cell's mean luminance, the
response of early visual populations to surface brightness (not only to edges). V1: 20 c/img,
4 orientations, 8x8 grid; V2: 8 c/img, 6 orientations, 4x4; V3: 4 c/img, 8 orientations, 2x2.
The luminance channel is coarse, low-level structure that survives a network's global average
pooling (where bright or dark objects lie matters less than how much of the image they cover),
so an untrained network's early layers match these ROIs measurably, as real V1 matches one
(Spearman rho about 0.10 in the reference study); oriented energy alone, being position-specific,
does not survive the pooling (rho about 0). Nothing here is chosen for any effect of training.
hV4: Gabor energy at 2 and 4 c/img, 8 orientations, pooled globally, plus three centre-weighted
colour-opponent means (red-green, blue-yellow, saturation).
LOC (voxels of lLOC and rLOC): object shape, with some size and position information: five shape
descriptors (corners, concavity, hole, elongation, curvature; `SHAPE_DESCRIPTORS`; weight 1),
object size (1), one-hot shape class (0.5) and object position (0.5).
IT: category and identity: one-hot category (weight 2), one-hot shape class (1) and the concept's
colour (1).
Each feature is z-scored over the stimulus set before weighting, mirroring voxel z-scoring.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from snnrsa.data import procedural

GT_ROIS = ["V1", "V2", "V3", "hV4", "LOC", "IT"]
# Per shape class: corners/12, concave, hole, elongation, curved outline.
SHAPE_DESCRIPTORS: dict[str, tuple[float, float, float, float, float]] = {
    "circle": (0.0, 0, 0, 0.0, 1), "ellipse": (0.0, 0, 0, 1.0, 1), "ring": (0.0, 0, 1, 0.0, 1),
    "crescent": (2 / 12, 1, 0, 0.5, 1), "square": (4 / 12, 0, 0, 0.0, 0),
    "triangle": (3 / 12, 0, 0, 0.0, 0), "hexagon": (6 / 12, 0, 0, 0.0, 0),
    "star": (10 / 12, 1, 0, 0.0, 0), "cross": (1.0, 1, 0, 0.3, 0), "arrow": (7 / 12, 1, 0, 1.0, 0),
}  # fmt: skip
# Early ROIs: (cycles per image, number of orientations) channels and pooling grid.
GABOR_BANKS: dict[str, tuple[list[tuple[float, int]], int]] = {
    "V1": ([(20.0, 4)], 8),
    "V2": ([(8.0, 6)], 4),
    "V3": ([(4.0, 8)], 2),
    "hV4": ([(2.0, 8), (4.0, 8)], 1),
}
LOCAL_ROIS = ("V1", "V2", "V3")  # one receptive-field cell per voxel; channels per cell below


def channels_per_cell(roi: str) -> int:
    """Features per receptive-field cell of a local early ROI: its orientations and luminance."""
    return GABOR_BANKS[roi][0][0][1] + 1


def _gabor_energy(lum: np.ndarray, cycles: float, n_orient: int, grid: int) -> np.ndarray:
    """Quadrature-pair Gabor amplitude, pooled on a grid x grid raster: (n, grid*grid*n_orient)."""
    n, size, _ = lum.shape
    f0 = min(cycles / size, 0.45)  # cycles per pixel, kept below Nyquist
    fy, fx = np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij")
    spectrum = np.fft.fft2(lum - lum.mean(axis=(1, 2), keepdims=True))
    pool = _cell_pool(size, grid)
    out = []
    for k in range(n_orient):
        theta = np.pi * k / n_orient
        # One-sided Gaussian around +f0 in the direction theta: a complex Gabor whose modulus is
        # the energy of the even/odd pair; bandwidth about one octave.
        d2 = (fx - f0 * np.cos(theta)) ** 2 + (fy - f0 * np.sin(theta)) ** 2
        amp = np.abs(np.fft.ifft2(spectrum * np.exp(-d2 / (2 * (0.4 * f0) ** 2))))
        out.append(np.einsum("gy,nyx,hx->ngh", pool, amp, pool).reshape(n, -1))
    return np.stack(out, axis=-1).reshape(n, -1)


def _cell_pool(size: int, grid: int) -> np.ndarray:
    """(grid, size) averaging weights of each pixel row (or column) into its grid cell."""
    cell = np.minimum(np.arange(size) * grid // size, grid - 1)
    pool = np.zeros((grid, size))
    pool[cell, np.arange(size)] = 1.0 / np.bincount(cell, minlength=grid)[cell]
    return pool


def _cell_means(lum: np.ndarray, grid: int) -> np.ndarray:
    """Mean luminance of each receptive-field cell of a grid x grid raster: (n, grid*grid)."""
    pool = _cell_pool(lum.shape[1], grid)
    return np.einsum("gy,nyx,hx->ngh", pool, lum, pool).reshape(len(lum), -1)


def _colour_opponent(images: np.ndarray) -> np.ndarray:
    """Centre-weighted means of red-green, blue-yellow and saturation: (n, 3)."""
    size = images.shape[1]
    g = (np.arange(size) + 0.5) / size * 2 - 1
    w = np.exp(-(g[:, None] ** 2 + g[None, :] ** 2) / (2 * 0.5**2))
    w /= w.sum()
    r, gr, b = images[..., 0], images[..., 1], images[..., 2]
    maps = [r - gr, b - (r + gr) / 2, images.max(axis=-1) - images.min(axis=-1)]
    return np.stack([np.einsum("nyx,yx->n", m, w) for m in maps], axis=1)


def _zscore_columns(x: np.ndarray) -> np.ndarray:
    sd = x.std(axis=0)
    return np.where(sd > 0, (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1), 0.0)


def _require_columns(meta: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in meta.columns]
    if missing:
        raise ValueError(f"{what}: meta lacks columns {missing} (ground_truth.csv has them)")


def ground_truth_features(images: np.ndarray, meta: pd.DataFrame, roi: str) -> np.ndarray:
    """Features (n, f) that drive `roi`'s voxels in the synthetic brain, z-scored over the images.

    images: float (n, H, W, 3) in [0, 1]; meta: rows of ground_truth.csv aligned with images.
    roi: V1, V2, V3, hV4, LOC (or lLOC, rLOC) or IT. See the module docstring for the model.
    """
    roi = "LOC" if roi in ("lLOC", "rLOC") else roi
    if roi not in GT_ROIS:
        raise ValueError(f"unknown ground-truth ROI {roi!r}; expected one of {GT_ROIS}")
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) != len(meta):
        raise ValueError(
            f"images must be (n, H, W, 3) with n = len(meta) = {len(meta)}, got {images.shape}"
        )
    if roi in GABOR_BANKS:
        bank, grid = GABOR_BANKS[roi]
        lum = images @ np.array([0.299, 0.587, 0.114])
        if roi in LOCAL_ROIS:  # per receptive-field cell: orientation channels, then luminance
            (cycles, n_orient), = bank
            energy = _gabor_energy(lum, cycles, n_orient, grid).reshape(len(lum), -1, n_orient)
            local = _cell_means(lum, grid)[..., None]
            return _zscore_columns(np.concatenate([energy, local], axis=2).reshape(len(lum), -1))
        parts = [_gabor_energy(lum, c, k, grid) for c, k in bank]
        parts.append(_colour_opponent(images))
        return _zscore_columns(np.concatenate(parts, axis=1))
    if roi == "LOC":
        _require_columns(meta, ["class", "scale", "x", "y"], "LOC features")
        shape_class = _one_hot(meta["class"], procedural.CLASSES)
        shape = np.array([SHAPE_DESCRIPTORS[c] for c in meta["class"]], dtype=float)
        groups = [
            (shape_class, 0.5),
            (shape, 1.0),
            (meta[["scale"]].to_numpy(float), 1.0),
            (meta[["x", "y"]].to_numpy(float), 0.5),
        ]
    else:
        _require_columns(
            meta, ["class", "category", "color_r", "color_g", "color_b"], "IT features"
        )
        colour = meta[["color_r", "color_g", "color_b"]].to_numpy(float)
        groups = [
            (_one_hot(meta["category"], procedural.CATEGORY_NAMES), 2.0),
            (_one_hot(meta["class"], procedural.CLASSES), 1.0),
            (colour, 1.0),
        ]
    return np.concatenate([_zscore_columns(x) * w for x, w in groups], axis=1)


def _one_hot(values: pd.Series, names: list[str]) -> np.ndarray:
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"unknown labels {unknown}; expected some of {names}")
    return (np.asarray(values)[:, None] == np.array(names)[None, :]).astype(float)

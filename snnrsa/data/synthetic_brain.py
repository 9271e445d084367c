"""A synthetic stand-in for THINGS-fMRI, written in exactly the release's on-disk format.

THINGS images and THINGS-fMRI cannot be shipped, so tests and demos run on this set instead. It has
the release's layout (see docs/data-formats.md): per subject a pandas "fixed"-format HDF5 response
matrix (voxels x trials, written with h5py), a stimulus-metadata CSV (one row per trial, trial order
shuffled within sessions and different for every subject) and a voxel-metadata CSV (ROI columns
coded 0/1, reliability and pRF columns), and images in the THINGS ``object_images`` layout.
The HDF5 frame is what ``DataFrame.to_hdf`` writes for string column labels ``voxel_id, "0",
"1", ...`` (as after reading a CSV) and a RangeIndex; ``pandas.read_hdf`` reads it (with PyTables).

Stimuli. A concept is one procedural shape class with a fixed identity (colour, texture);
its exemplars vary pose, size and clutter (`snnrsa.data.procedural`). Every session shows one
exemplar of every concept (so there are ``n_sessions`` exemplars per concept) and each test image
(an extra exemplar of ``n_test`` concepts) once.

Ground-truth encoding model (what each ROI "computes"; `ground_truth_features`):

- Early ROIs: Gabor energy of the image luminance, the amplitude of a complex (quadrature-pair)
  Gabor filter, average-pooled over a grid of receptive fields. Along the hierarchy the grid
  coarsens and the preferred spatial frequency (cycles per image) falls:
  V1 20 c/img, 4 orientations, 8x8 grid; V2 8 c/img, 6 orientations, 4x4; V3 4 c/img,
  8 orientations, 2x2; hV4 2 and 4 c/img, 8 orientations, pooled globally, plus three
  centre-weighted colour-opponent means (red-green, blue-yellow, saturation).
- LOC (voxels of lLOC and rLOC): object shape, with some size and position information:
  five shape descriptors (corners, concavity, hole, elongation, curvature; `SHAPE_DESCRIPTORS`;
  weight 1), object size (1), one-hot shape class (0.5) and object position (0.5).
- IT: category and identity: one-hot category (weight 2), one-hot shape class (1) and the
  concept's colour (1).
Each feature is z-scored over the stimulus set before weighting, mirroring voxel z-scoring.

Voxels. An early-ROI voxel has one receptive field (a grid cell) and mixes the orientation and
frequency channels of that cell with random non-negative weights (hV4 voxels: three random
features); an LOC or IT voxel mixes three random features of its ROI. The mixture is scaled to unit
variance over the images (the signal). Noise per trial, relative to that: shared subject-specific
structured noise (five trial factors with random voxel loadings, common to all ROIs of a subject,
30 % of the noise variance), a per-voxel session offset (10 %) and independent trial noise (60 %),
with total noise variance 1/snr. Each voxel then gets a random gain and baseline. Voxels in no ROI
carry noise only. Every randomness comes from ``seed``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from PIL import Image

from snnrsa.data import procedural

SUBJECTS = ["sub-01", "sub-02", "sub-03"]
DEFAULT_VOXELS: dict[str, int] = {
    "V1": 200, "V2": 200, "V3": 150, "hV4": 120, "lLOC": 80, "rLOC": 80, "IT": 150, "unassigned": 100,
}  # fmt: skip
GT_ROIS = ["V1", "V2", "V3", "hV4", "LOC", "IT"]
# ROI columns of the release's voxel metadata, in its order (Glasser: a few of its 180 columns).
ROI_COLUMNS = [
    "V1", "V2", "V3", "hV4", "VO1", "VO2", "LO1 (prf)", "LO2 (prf)", "TO1", "TO2", "V3b", "V3a",
    "lEBA", "rEBA", "lFFA", "rFFA", "lOFA", "rOFA", "lSTS", "rSTS", "lPPA", "rPPA", "lRSC", "rRSC",
    "lTOS", "rTOS", "lLOC", "rLOC", "IT",
]  # fmt: skip
GLASSER_COLUMNS = ["glasser-TE1p", "glasser-TE2p", "glasser-FFC", "glasser-VVC", "glasser-PHA1"]
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
GENERATOR_VERSION = 1  # bump when the output for given parameters changes (invalidates caches)
_RELIABILITY_COLUMNS = (
    "nc_testset",
    "nc_singletrial",
    "splithalf_uncorrected",
    "splithalf_corrected",
)
_NOISE_SHARES = {"structured": 0.3, "session": 0.1, "trial": 0.6}
_N_FACTORS = 5
_MIX = 3  # features mixed per hV4/LOC/IT voxel
_VOLUME = (72, 88, 66)  # voxel grid for ids and coordinates
# Rough (x, y, z) boxes per primary ROI in that grid; left hemisphere x < 36.
_BOXES = {
    "V1": ((28, 44), (2, 12), (20, 34)), "V2": ((24, 48), (6, 18), (18, 38)),
    "V3": ((20, 52), (10, 22), (16, 40)), "hV4": ((18, 54), (16, 26), (12, 24)),
    "lLOC": ((6, 20), (16, 30), (22, 38)), "rLOC": ((52, 66), (16, 30), (22, 38)),
    "IT": ((8, 64), (28, 44), (6, 20)), "unassigned": ((0, 72), (44, 88), (30, 66)),
}  # fmt: skip


# ---------------------------------------------------------------- ground-truth features
def _gabor_energy(lum: np.ndarray, cycles: float, n_orient: int, grid: int) -> np.ndarray:
    """Quadrature-pair Gabor amplitude, pooled on a grid x grid raster: (n, grid*grid*n_orient)."""
    n, size, _ = lum.shape
    f0 = min(cycles / size, 0.45)  # cycles per pixel, kept below Nyquist
    fy, fx = np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij")
    spectrum = np.fft.fft2(lum - lum.mean(axis=(1, 2), keepdims=True))
    cell = np.minimum(np.arange(size) * grid // size, grid - 1)
    pool = np.zeros((grid, size))
    pool[cell, np.arange(size)] = 1.0 / np.bincount(cell, minlength=grid)[cell]
    out = []
    for k in range(n_orient):
        theta = np.pi * k / n_orient
        # One-sided Gaussian around +f0 in the direction theta: a complex Gabor whose modulus is
        # the energy of the even/odd pair; bandwidth about one octave.
        d2 = (fx - f0 * np.cos(theta)) ** 2 + (fy - f0 * np.sin(theta)) ** 2
        amp = np.abs(np.fft.ifft2(spectrum * np.exp(-d2 / (2 * (0.4 * f0) ** 2))))
        out.append(np.einsum("gy,nyx,hx->ngh", pool, amp, pool).reshape(n, -1))
    return np.stack(out, axis=-1).reshape(n, -1)


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
        parts = [_gabor_energy(lum, c, k, grid) for c, k in bank]
        if roi == "hV4":
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


# ---------------------------------------------------------------- stimuli
def _make_stimuli(
    rng: np.random.Generator, n_concepts: int, n_sessions: int, n_test: int, image_size: int
) -> tuple[pd.DataFrame, np.ndarray]:
    """Ground-truth table (one row per image) and uint8 images in the same order."""
    n_cls = len(procedural.CLASSES)
    concept_label = np.arange(n_concepts) % n_cls
    concepts = [f"{procedural.CLASSES[c]}{i // n_cls + 1}" for i, c in enumerate(concept_label)]
    identity = procedural.sample_params(concept_label, rng)
    test_concepts = set(rng.choice(n_concepts, size=n_test, replace=False).tolist())
    rows, params = [], []
    for i, concept in enumerate(concepts):
        numbers = list(range(1, n_sessions + 1))
        if i in test_concepts:
            numbers.append(n_sessions + 1 + int(rng.integers(0, 4)))
        poses = procedural.sample_params([concept_label[i]] * len(numbers), rng)
        appearance = {f: getattr(identity[i], f) for f in procedural.APPEARANCE_FIELDS}
        for number, pose in zip(numbers, poses):
            p = replace(pose, **appearance)
            letter = "bns"[int(rng.integers(3))]
            rows.append(
                {
                    "stimulus": f"{concept}_{number:02d}{letter}.jpg",
                    "concept": concept,
                    "trial_type": "test" if number > n_sessions else "train",
                    "exemplar": number,
                    "class": p.class_name,
                    "label": p.label,
                    "category": p.category,
                    "x": p.x,
                    "y": p.y,
                    "scale": p.scale,
                    "rotation": p.rotation,
                    "color_r": p.color[0],
                    "color_g": p.color[1],
                    "color_b": p.color[2],
                    "texture": p.texture,
                    "texture_r": p.texture_color[0],
                    "texture_g": p.texture_color[1],
                    "texture_b": p.texture_color[2],
                    "texture_freq": p.texture_freq,
                    "texture_orient": p.texture_orient,
                    "clutter_seed": p.clutter_seed,
                }
            )
            params.append(p)
    return pd.DataFrame(rows), procedural.render(params, image_size)


def _save_images(root: Path, table: pd.DataFrame, images: np.ndarray) -> np.ndarray:
    """Write JPEGs in the THINGS layout; return the decoded files (float), which subjects "saw"."""
    seen = np.empty(images.shape, dtype=np.float64)
    for i, (concept, stimulus) in enumerate(zip(table["concept"], table["stimulus"])):
        path = root / "images" / "object_images" / concept / stimulus
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(path, quality=95)
        with Image.open(path) as img:
            seen[i] = np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0
    return seen


# ---------------------------------------------------------------- voxels and trials
def _layout_voxels(rng: np.random.Generator, voxels: dict[str, int]) -> pd.DataFrame:
    """Voxel ids, coordinates and primary ROI, sorted by id (ROIs interleave, as in the release)."""
    parts = []
    taken: set[int] = set()
    for roi, count in voxels.items():
        (x0, x1), (y0, y1), (z0, z1) = _BOXES[roi]
        box = np.stack(
            np.meshgrid(np.arange(x0, x1), np.arange(y0, y1), np.arange(z0, z1), indexing="ij"), -1
        ).reshape(-1, 3)
        ids = box[:, 0] + _VOLUME[0] * (box[:, 1] + _VOLUME[1] * box[:, 2])
        free = np.flatnonzero(~np.isin(ids, list(taken)))
        if count > len(free):
            raise ValueError(f"voxels[{roi!r}] = {count} exceeds the {len(free)} free positions")
        pick = rng.choice(free, size=count, replace=False)
        taken.update(ids[pick].tolist())
        parts.append(
            pd.DataFrame(
                {
                    "voxel_id": ids[pick],
                    "voxel_x": box[pick, 0],
                    "voxel_y": box[pick, 1],
                    "voxel_z": box[pick, 2],
                    "roi": roi,
                }
            )
        )
    return pd.concat(parts).sort_values("voxel_id", ignore_index=True)


def _mixing(
    rng: np.random.Generator, roi: str, n_vox: int, n_feat: int
) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative weights (n_vox, n_feat) and each voxel's receptive-field cell (-1: none)."""
    w = np.zeros((n_vox, n_feat))
    cells = np.full(n_vox, -1)
    if roi in ("V1", "V2", "V3"):
        bank, grid = GABOR_BANKS[roi]
        n_orient = bank[0][1]  # one channel per orientation at a single frequency
        cells = rng.integers(grid * grid, size=n_vox)
        for v, c in enumerate(cells):
            w[v, c * n_orient : (c + 1) * n_orient] = rng.exponential(size=n_orient)
    else:
        for v in range(n_vox):
            w[v, rng.choice(n_feat, size=min(_MIX, n_feat), replace=False)] = rng.exponential(
                size=min(_MIX, n_feat)
            )
    return w, cells


def _trials(
    rng: np.random.Generator, table: pd.DataFrame, n_sessions: int, runs: int, subject: int
) -> pd.DataFrame:
    """Stimulus metadata of one subject: each session shows one exemplar of every concept (which
    exemplar is random per concept) and every test image, in a random order split into runs."""
    train = table[table["trial_type"] == "train"]
    test = table[table["trial_type"] == "test"]
    by_concept = {c: g["stimulus"].tolist() for c, g in train.groupby("concept", sort=False)}
    order = {c: rng.permutation(len(s)) for c, s in by_concept.items()}
    rows = []
    for s in range(n_sessions):
        shown = [(by_concept[c][order[c][s]], c, "train") for c in by_concept]
        shown += [(st, c, "test") for st, c in zip(test["stimulus"], test["concept"])]
        perm = rng.permutation(len(shown))
        run_of = np.array_split(np.arange(len(shown)), runs)
        for r, idx in enumerate(run_of):
            for j in idx:
                stim, concept, kind = shown[perm[j]]
                rows.append((kind, s + 1, r + 1, subject, stim, concept))
    meta = pd.DataFrame(
        rows, columns=["trial_type", "session", "run", "subject_id", "stimulus", "concept"]
    )
    meta.insert(4, "trial_id", np.arange(len(meta)))
    return meta


def _reliability(responses: np.ndarray, meta: pd.DataFrame) -> dict[str, np.ndarray]:
    """Noise-ceiling SNR and split-half reliability per voxel from the repeated test images."""
    test = meta[meta["trial_type"] == "test"]
    stimuli = sorted(test["stimulus"].unique())
    if not stimuli:
        nan = np.full(len(responses), np.nan)
        return dict.fromkeys(_RELIABILITY_COLUMNS, nan)
    reps = np.stack(
        [
            responses[:, test.loc[test["stimulus"] == s].sort_values("session")["trial_id"]]
            for s in stimuli
        ],
        axis=1,
    )  # (vox, image, repetition)
    reps = (reps - reps.mean(axis=(1, 2), keepdims=True)) / reps.std(axis=(1, 2), keepdims=True)
    noise_var = reps.var(axis=2, ddof=1).mean(axis=1)
    signal_var = np.maximum(1.0 - noise_var, 0.0)
    ncsnr = np.sqrt(signal_var) / np.sqrt(noise_var)
    n_rep = reps.shape[2]
    odd, even = reps[:, :, 0::2].mean(axis=2), reps[:, :, 1::2].mean(axis=2)
    odd, even = odd - odd.mean(axis=1, keepdims=True), even - even.mean(axis=1, keepdims=True)
    r = (odd * even).sum(1) / np.sqrt((odd**2).sum(1) * (even**2).sum(1))
    values = (
        100 * ncsnr**2 / (ncsnr**2 + 1 / n_rep),
        100 * ncsnr**2 / (ncsnr**2 + 1),
        r,
        np.divide(2 * r, 1 + r, out=np.full_like(r, np.nan), where=r > -1),  # Spearman-Brown
    )
    return dict(zip(_RELIABILITY_COLUMNS, values))


def _voxel_metadata(
    rng: np.random.Generator,
    layout: pd.DataFrame,
    cells: np.ndarray,
    subject: int,
    reliability: dict[str, np.ndarray],
) -> pd.DataFrame:
    """The release's voxel-metadata columns; ROI membership derived from each voxel's primary ROI."""
    n = len(layout)
    roi = layout["roi"].to_numpy()
    meta = layout[["voxel_id"]].copy()
    meta.insert(1, "subject_id", subject)
    for c in ("voxel_x", "voxel_y", "voxel_z"):
        meta[c] = layout[c].to_numpy()
    for c, v in reliability.items():
        meta[c] = v
    # pRFs: early voxels at their receptive-field cell (image = 10 deg wide), others anywhere.
    ecc, angle = rng.uniform(0, 7, n), rng.uniform(0, 360, n)
    size = rng.uniform(0.5, 6, n)
    rsq = rng.uniform(0.0, 0.1, n)
    for r in ("V1", "V2", "V3"):
        grid = GABOR_BANKS[r][1]
        m = (roi == r) & (cells >= 0)
        cx = ((cells[m] % grid) + 0.5) / grid * 10 - 5
        cy = 5 - ((cells[m] // grid) + 0.5) / grid * 10
        ecc[m], angle[m] = np.hypot(cx, cy), np.degrees(np.arctan2(cy, cx)) % 360
        size[m] = 10 / grid / 2
        rsq[m] = rng.uniform(0.2, 0.7, m.sum())
    meta["prf-eccentricity"], meta["prf-polarangle"] = ecc, angle
    meta["prf-rsquared"], meta["prf-size"] = rsq, size
    u = rng.uniform(size=n)
    member = {c: np.zeros(n, dtype=np.int64) for c in ROI_COLUMNS + GLASSER_COLUMNS}
    for r in ("V1", "V2", "V3", "hV4", "lLOC", "rLOC", "IT"):
        member[r] = (roi == r).astype(np.int64)
    loc = (roi == "lLOC") | (roi == "rLOC")
    member["LO1 (prf)"] = (loc & (u < 0.2)).astype(np.int64)
    member["LO2 (prf)"] = (loc & (u >= 0.2) & (u < 0.4)).astype(np.int64)
    member["lFFA"] = ((roi == "IT") & (u < 0.15)).astype(np.int64)
    member["rFFA"] = ((roi == "IT") & (u >= 0.15) & (u < 0.3)).astype(np.int64)
    for i, c in enumerate(GLASSER_COLUMNS):  # Glasser parcels tile most of IT
        member[c] = ((roi == "IT") & (u >= i * 0.18) & (u < (i + 1) * 0.18)).astype(np.int64)
    spare = roi == "unassigned"
    for i, c in enumerate(("V3a", "V3b", "lEBA", "rEBA", "lPPA", "rPPA", "lOFA", "rOFA")):
        member[c] = (spare & (u >= i * 0.1) & (u < (i + 1) * 0.1)).astype(np.int64)
    return pd.concat([meta, pd.DataFrame(member, index=meta.index)], axis=1)


# ---------------------------------------------------------------- pandas "fixed" HDF5 via h5py
def _set_str(obj: h5py.Group | h5py.Dataset, name: str, value: str) -> None:
    """A string attribute as PyTables stores a Python str: fixed length, UTF-8 (empty: no data)."""
    if not value:
        obj.attrs[name] = h5py.Empty("S1")
        return
    data = value.encode()
    obj.attrs.create(name, np.array(data), dtype=h5py.string_dtype("utf-8", len(data)))


def _write_array(group: h5py.Group, key: str, values: np.ndarray, kind: str | None) -> None:
    ds = group.create_dataset(key, data=values)
    for name, value in (("CLASS", "ARRAY"), ("FLAVOR", "numpy"), ("TITLE", ""), ("VERSION", "2.4")):
        _set_str(ds, name, value)
    if kind is not None:  # a pandas Index: its kind, its name (None, pickled) and nan_rep
        _set_str(ds, "kind", kind)
        ds.attrs["name"] = np.bytes_(b"N.")
        if kind == "string":
            _set_str(ds, "nan_rep", "")
    ds.attrs["transposed"] = np.uint8(1)  # PyTables writes a 1-byte bitfield; same value


def write_response_h5(path: Path, responses: np.ndarray, voxel_ids: np.ndarray) -> None:
    """Write what ``DataFrame.to_hdf(path, key="ResponseData")`` writes for a frame with columns
    ``voxel_id, "0", "1", ...`` (string labels, as after reading a CSV) and a RangeIndex.

    Layout: float block0 (trial columns) and int64 block1 (voxel_id), both stored transposed
    (rows = voxels); axis0 = column labels (fixed-length bytes), axis1 = the row index 0..n-1.
    """
    n_vox, n_trials = responses.shape
    trial_labels = np.array([str(t).encode() for t in range(n_trials)])
    with h5py.File(path, "w") as f:
        for name, value in (
            ("CLASS", "GROUP"),
            ("PYTABLES_FORMAT_VERSION", "2.1"),
            ("TITLE", ""),
            ("VERSION", "1.0"),
        ):
            _set_str(f, name, value)
        g = f.create_group("ResponseData")
        for name, value in (
            ("CLASS", "GROUP"),
            ("TITLE", ""),
            ("VERSION", "1.0"),
            ("pandas_type", "frame"),
            ("pandas_version", "0.15.2"),
            ("encoding", "UTF-8"),
            ("errors", "strict"),
            ("axis0_variety", "regular"),
            ("axis1_variety", "regular"),
            ("block0_items_variety", "regular"),
            ("block1_items_variety", "regular"),
        ):
            _set_str(g, name, value)
        g.attrs["ndim"] = np.int64(2)
        g.attrs["nblocks"] = np.int64(2)
        _write_array(g, "axis0", np.concatenate([[b"voxel_id"], trial_labels]), "string")
        _write_array(g, "axis1", np.arange(n_vox, dtype=np.int64), "integer")
        _write_array(g, "block0_items", trial_labels, "string")
        _write_array(g, "block0_values", np.asarray(responses, dtype=np.float64), None)
        _write_array(g, "block1_items", np.array([b"voxel_id"]), "string")
        _write_array(g, "block1_values", np.asarray(voxel_ids, dtype=np.int64)[:, None], None)


# ---------------------------------------------------------------- generation
def _generate(
    root: Path,
    *,
    seed: int,
    n_concepts: int,
    n_sessions: int,
    runs_per_session: int,
    n_test: int,
    image_size: int,
    voxels: dict[str, int],
    snr: float,
) -> None:
    table, images = _make_stimuli(
        np.random.default_rng([seed, 0]), n_concepts, n_sessions, n_test, image_size
    )
    seen = _save_images(root, table, images)
    table.to_csv(root / "ground_truth.csv", index=False)
    features = {roi: ground_truth_features(seen, table, roi) for roi in GT_ROIS}
    index = {s: i for i, s in enumerate(table["stimulus"])}
    fmri = root / "fmri"
    fmri.mkdir()
    for k, subject in enumerate(SUBJECTS, start=1):
        rng = np.random.default_rng([seed, 1, k])
        layout = _layout_voxels(rng, voxels)
        meta = _trials(rng, table, n_sessions, runs_per_session, k)
        n_vox, n_trials = len(layout), len(meta)
        roi = layout["roi"].to_numpy()
        signal = np.zeros((n_vox, len(table)))
        cells = np.full(n_vox, -1)
        for r in voxels:
            m = roi == r
            if r == "unassigned" or not m.any():
                continue
            f = features["LOC" if r in ("lLOC", "rLOC") else r]
            w, cells[m] = _mixing(rng, r, int(m.sum()), f.shape[1])
            s = w @ f.T
            signal[m] = s / np.maximum(s.std(axis=1, keepdims=True), 1e-12)
        shown = meta["stimulus"].map(index).to_numpy()
        loadings = rng.standard_normal((n_vox, _N_FACTORS)) / np.sqrt(_N_FACTORS)
        factors = rng.standard_normal((_N_FACTORS, n_trials))
        offsets = rng.standard_normal((n_vox, n_sessions))[:, meta["session"].to_numpy() - 1]
        noise = (
            np.sqrt(_NOISE_SHARES["structured"]) * loadings @ factors
            + np.sqrt(_NOISE_SHARES["session"]) * offsets
            + np.sqrt(_NOISE_SHARES["trial"]) * rng.standard_normal((n_vox, n_trials))
        ) / np.sqrt(snr)
        gain = rng.uniform(0.5, 2.0, (n_vox, 1))
        baseline = rng.normal(0.0, 0.5, (n_vox, 1))
        responses = baseline + gain * (signal[:, shown] + noise)
        name = f"{subject}_"
        write_response_h5(fmri / f"{name}ResponseData.h5", responses, layout["voxel_id"].to_numpy())
        meta.to_csv(fmri / f"{name}StimulusMetadata.csv", index=False)
        vox = _voxel_metadata(rng, layout, cells, k, _reliability(responses, meta))
        vox.to_csv(fmri / f"{name}VoxelMetadata.csv", index=False)
    (root / "README.md").write_text(_readme(table, voxels, snr))


def _readme(table: pd.DataFrame, voxels: dict[str, int], snr: float) -> str:
    doc = (__doc__ or "").strip()
    return (
        "# Synthetic THINGS-fMRI-format data set (snnrsa)\n\n"
        "Generated by `snnrsa.data.synthetic_brain.ensure_synthetic_brain`; parameters in "
        "`params.json`, per-image class, category and rendering parameters in `ground_truth.csv`.\n"
        f"{table['concept'].nunique()} concepts, {len(table)} images, subjects {SUBJECTS}, "
        f"voxels per primary ROI {voxels}, snr {snr}.\n\n"
        "Layout: `fmri/sub-0X_ResponseData.h5`, `fmri/sub-0X_StimulusMetadata.csv`, "
        "`fmri/sub-0X_VoxelMetadata.csv`, `images/object_images/<concept>/<file>.jpg`.\n\n"
        "## Generator and ground-truth model\n\n" + doc + "\n"
    )


def ensure_synthetic_brain(
    cache_dir: str | Path,
    *,
    seed: int = 0,
    n_concepts: int = 96,
    n_sessions: int = 4,
    runs_per_session: int = 4,
    n_test: int = 12,
    image_size: int = 64,
    voxels: dict[str, int] | None = None,
    snr: float = 2.0,
) -> Path:
    """Generate the data set once into ``cache_dir/synthetic_<hash of parameters>``; return it.

    Generation writes into a temporary folder that is renamed into place, so concurrent callers
    never see a partial set; a caller that loses the race reuses the winner's folder.
    """
    voxels = dict(DEFAULT_VOXELS if voxels is None else voxels)
    unknown = sorted(set(voxels) - set(_BOXES))
    if unknown:
        raise ValueError(f"voxels has unknown ROIs {unknown}; expected keys among {list(_BOXES)}")
    if not (len(procedural.CLASSES) <= n_concepts and 0 <= n_test <= n_concepts):
        raise ValueError(
            f"need n_concepts >= {len(procedural.CLASSES)} and 0 <= n_test <= "
            f"n_concepts, got n_concepts={n_concepts}, n_test={n_test}"
        )
    if n_sessions < 2 or runs_per_session < 1 or snr <= 0:
        raise ValueError(
            f"need n_sessions >= 2, runs_per_session >= 1, snr > 0; got "
            f"{n_sessions}, {runs_per_session}, {snr}"
        )
    params = {
        "version": GENERATOR_VERSION,
        "seed": seed,
        "n_concepts": n_concepts,
        "n_sessions": n_sessions,
        "runs_per_session": runs_per_session,
        "n_test": n_test,
        "image_size": image_size,
        "voxels": voxels,
        "snr": snr,
    }
    text = json.dumps(params, sort_keys=True)
    final = Path(cache_dir) / f"synthetic_{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        kwargs = {k: v for k, v in params.items() if k != "version"}
        _generate(tmp, **kwargs)
        (tmp / "params.json").write_text(text + "\n")
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():  # a real failure, not a lost race
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final

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

Ground-truth encoding model (what each ROI "computes"): `snnrsa.data.ground_truth` (Gabor
energy and local luminance per receptive-field cell in V1-V3, globally pooled energy and colour
in hV4, shape in LOC, category and identity in IT), also written into the set's README.

Voxels. An early-ROI voxel has one receptive field (a grid cell) and mixes the orientation and
luminance channels of that cell with random non-negative weights (hV4 voxels: three random
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

import numpy as np
import pandas as pd
from PIL import Image

from snnrsa.data import ground_truth, procedural
from snnrsa.data.ground_truth import (
    GABOR_BANKS,
    GT_ROIS,
    LOCAL_ROIS,
    SHAPE_DESCRIPTORS,
    channels_per_cell,
    ground_truth_features,
)
from snnrsa.data.pandas_h5 import write_response_h5
from snnrsa.data.synthetic_voxels import (
    GLASSER_COLUMNS,
    ROI_COLUMNS,
    VOXEL_BOXES,
    layout_voxels,
    reliability,
    voxel_metadata,
)

# the names tests and readers use, wherever they now live
__all__ = [
    "DEFAULT_VOXELS", "GABOR_BANKS", "GENERATOR_VERSION", "GLASSER_COLUMNS", "GT_ROIS",
    "ROI_COLUMNS", "SHAPE_DESCRIPTORS", "SUBJECTS", "ensure_synthetic_brain",
    "ground_truth_features", "write_response_h5",
]
SUBJECTS = ["sub-01", "sub-02", "sub-03"]
DEFAULT_VOXELS: dict[str, int] = {
    "V1": 200, "V2": 200, "V3": 150, "hV4": 120, "lLOC": 80, "rLOC": 80, "IT": 150, "unassigned": 100,
}  # fmt: skip
_NOISE_SHARES = {"structured": 0.3, "session": 0.1, "trial": 0.6}
_N_FACTORS = 5
_MIX = 3  # features mixed per hV4/LOC/IT voxel
GENERATOR_VERSION = 2  # bump when the output for given parameters changes (invalidates caches)


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


def _mixing(
    rng: np.random.Generator, roi: str, n_vox: int, n_feat: int
) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative weights (n_vox, n_feat) and each voxel's receptive-field cell (-1: none)."""
    w = np.zeros((n_vox, n_feat))
    cells = np.full(n_vox, -1)
    if roi in LOCAL_ROIS:
        grid, n_chan = GABOR_BANKS[roi][1], channels_per_cell(roi)
        cells = rng.integers(grid * grid, size=n_vox)
        for v, c in enumerate(cells):
            w[v, c * n_chan : (c + 1) * n_chan] = rng.exponential(size=n_chan)
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


# ---------------------------------------------------------------- voxels, trials, generation
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
        layout = layout_voxels(rng, voxels)
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
        vox = voxel_metadata(rng, layout, cells, k, reliability(responses, meta))
        vox.to_csv(fmri / f"{name}VoxelMetadata.csv", index=False)
    (root / "README.md").write_text(_readme(table, voxels, snr))


def _readme(table: pd.DataFrame, voxels: dict[str, int], snr: float) -> str:
    doc = (__doc__ or "").strip() + "\n\n" + (ground_truth.__doc__ or "").strip()
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
    unknown = sorted(set(voxels) - set(VOXEL_BOXES))
    if unknown:
        raise ValueError(f"voxels has unknown ROIs {unknown}; expected keys among "
                         f"{list(VOXEL_BOXES)}")
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

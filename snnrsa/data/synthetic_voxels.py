"""The synthetic brain's voxels as the THINGS-fMRI release describes them: ids and coordinates in
a volume, ROI membership columns, pRF and reliability columns (``sub-0X_VoxelMetadata.csv``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from snnrsa.data.ground_truth import GABOR_BANKS

# ROI columns of the release's voxel metadata, in its order (Glasser: a few of its 180 columns).
ROI_COLUMNS = [
    "V1", "V2", "V3", "hV4", "VO1", "VO2", "LO1 (prf)", "LO2 (prf)", "TO1", "TO2", "V3b", "V3a",
    "lEBA", "rEBA", "lFFA", "rFFA", "lOFA", "rOFA", "lSTS", "rSTS", "lPPA", "rPPA", "lRSC", "rRSC",
    "lTOS", "rTOS", "lLOC", "rLOC", "IT",
]  # fmt: skip
GLASSER_COLUMNS = ["glasser-TE1p", "glasser-TE2p", "glasser-FFC", "glasser-VVC", "glasser-PHA1"]
RELIABILITY_COLUMNS = (
    "nc_testset",
    "nc_singletrial",
    "splithalf_uncorrected",
    "splithalf_corrected",
)
_VOLUME = (72, 88, 66)  # voxel grid for ids and coordinates
# Rough (x, y, z) boxes per primary ROI in that grid; left hemisphere x < 36.
VOXEL_BOXES = {
    "V1": ((28, 44), (2, 12), (20, 34)), "V2": ((24, 48), (6, 18), (18, 38)),
    "V3": ((20, 52), (10, 22), (16, 40)), "hV4": ((18, 54), (16, 26), (12, 24)),
    "lLOC": ((6, 20), (16, 30), (22, 38)), "rLOC": ((52, 66), (16, 30), (22, 38)),
    "IT": ((8, 64), (28, 44), (6, 20)), "unassigned": ((0, 72), (44, 88), (30, 66)),
}  # fmt: skip


def layout_voxels(rng: np.random.Generator, voxels: dict[str, int]) -> pd.DataFrame:
    """Voxel ids, coordinates and primary ROI, sorted by id (ROIs interleave, as in the release)."""
    parts = []
    taken: set[int] = set()
    for roi, count in voxels.items():
        (x0, x1), (y0, y1), (z0, z1) = VOXEL_BOXES[roi]
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


def reliability(responses: np.ndarray, meta: pd.DataFrame) -> dict[str, np.ndarray]:
    """Noise-ceiling SNR and split-half reliability per voxel from the repeated test images."""
    test = meta[meta["trial_type"] == "test"]
    stimuli = sorted(test["stimulus"].unique())
    if not stimuli:
        nan = np.full(len(responses), np.nan)
        return dict.fromkeys(RELIABILITY_COLUMNS, nan)
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
    return dict(zip(RELIABILITY_COLUMNS, values))


def voxel_metadata(
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

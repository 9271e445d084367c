"""Reading THINGS-fMRI response data (``<subject>_ResponseData.h5``) for the ROIs' voxels only.

One subject is 16-18 GB in memory, so only the rows (voxels) of the requested ROIs are read, in
chunks of increasing row indices on the HDF5 dataset, and each chunk is reduced to condition means
before the next is read: memory stays bounded by ``CHUNK_BYTES`` plus the (voxels x conditions)
result, whatever the ROI size. The conditions come from ``things.read_conditions``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np
import pandas as pd

if TYPE_CHECKING:  # things imports this module: the types only, no import at run time
    from snnrsa.data.things import Conditions, SubjectConditions

log = logging.getLogger(__name__)

RELIABILITY_COLUMN = "nc_testset"
CHUNK_BYTES = 1 << 27  # float64 response rows read per HDF5 call (128 MiB)
_BLOCK = re.compile(r"block\d+_values")


@dataclass
class RoiPatterns:
    """One subject's condition patterns per ROI, and why a ROI ended up without voxels."""

    patterns: dict[str, np.ndarray]  # roi -> (n_conditions, n_voxels)
    empty: dict[str, str]  # roi -> reason (only with on_empty_roi="skip")
    dropped: dict[str, int]  # roi -> voxels dropped for NaN/inf betas



def empty_roi_error(subject: str, roi: str, columns: list[str], reason: str) -> ValueError:
    return ValueError(
        f"{subject}: ROI {roi!r} ({' | '.join(columns)}) {reason} "
        "(brain.on_empty_roi=skip drops the ROI with a warning)"
    )



def _roi_rows(
    path: Path, rois: dict[str, list[str]], min_reliability: float | None
) -> tuple[dict[str, np.ndarray], dict[str, str], int]:
    """Row indices per ROI (union of its 0/1 columns, reliability-filtered), the reason for each
    ROI without rows, and the number of voxel rows."""
    if not path.is_file():
        raise FileNotFoundError(f"voxel metadata not found: {path}")
    header = pd.read_csv(path, nrows=0).columns
    wanted = sorted({c for cols in rois.values() for c in cols})
    unknown = [c for c in wanted if c not in header]
    if unknown:
        raise ValueError(
            f"{path}: unknown ROI columns {unknown}; available include "
            f"{[c for c in header if not c.startswith('glasser-')][:40]}"
        )
    if min_reliability is not None and RELIABILITY_COLUMN not in header:
        raise ValueError(
            f"{path}: missing column {RELIABILITY_COLUMN!r}, needed by "
            f"brain.min_reliability={min_reliability}"
        )
    extra = [RELIABILITY_COLUMN] if min_reliability is not None else []
    table = pd.read_csv(path, usecols=wanted + [c for c in extra if c not in wanted])
    reliable = (
        np.ones(len(table), bool)
        if min_reliability is None
        else (table[RELIABILITY_COLUMN].to_numpy(float) >= min_reliability)  # NaN: not reliable
    )
    rows, empty = {}, {}
    for roi, cols in rois.items():
        member = (table[cols].fillna(0).to_numpy() != 0).any(axis=1)
        rows[roi] = np.flatnonzero(member & reliable)
        if not member.any():
            empty[roi] = f"has no voxels in {path}"
        elif len(rows[roi]) == 0:
            empty[roi] = (
                f"has no voxels with {RELIABILITY_COLUMN} >= {min_reliability} in {path} "
                f"(of {int(member.sum())})"
            )
    return rows, empty, len(table)


def _pandas_values(path: Path, n_trials: int, n_voxels: int) -> np.ndarray:
    """Fallback for HDF5 files that are not pandas fixed format: the whole frame via read_hdf."""
    try:
        import tables  # noqa: F401  (pandas.read_hdf needs it)
    except ImportError:
        raise ImportError(
            f"{path} is not a pandas fixed-format file (no block*_values float block); reading it "
            "with pandas.read_hdf needs PyTables, which is not installed (pip install tables)"
        ) from None
    log.warning(
        "%s is not pandas fixed format (no block*_values); falling back to pandas.read_hdf, "
        "which loads the whole frame into memory",
        path,
    )
    frame = pd.read_hdf(path)
    values = frame.drop(columns=["voxel_id"], errors="ignore").select_dtypes("floating")
    if values.shape != (n_voxels, n_trials):
        raise ValueError(
            f"{path}: pandas frame has float columns of shape {values.shape}, expected "
            f"({n_voxels} voxels, {n_trials} trials of the stimulus metadata)"
        )
    return values.to_numpy(np.float64)


def _response_block(f: h5py.File, path: Path, n_trials: int, n_voxels: int) -> h5py.Dataset | None:
    """The float (voxels x trials) block of a pandas fixed-format frame; None when the file has
    no block*_values at all (not fixed format)."""
    groups = [k for k in f if isinstance(f[k], h5py.Group)]
    if not any(_BLOCK.fullmatch(k) for g in groups for k in f[g]):
        return None
    if len(groups) != 1:
        raise ValueError(f"{path}: expected one top-level group, found {groups}")
    group = f[groups[0]]
    shapes = {k: (v.shape, v.dtype) for k, v in group.items() if isinstance(v, h5py.Dataset)}
    blocks = [
        k
        for k, (shape, dtype) in shapes.items()
        if _BLOCK.fullmatch(k) and dtype.kind == "f" and len(shape) == 2 and shape[1] == n_trials
    ]
    if len(blocks) != 1:
        raise ValueError(
            f"{path}: expected one float block with {n_trials} columns (the trials "
            f"of the stimulus metadata), found datasets {shapes}"
        )
    ds = group[blocks[0]]
    if ds.shape[0] != n_voxels:
        raise ValueError(
            f"{path}: {blocks[0]} has {ds.shape[0]} rows but the voxel metadata has {n_voxels}"
        )
    return ds


def _zscore(x: np.ndarray, mode: str, sessions: np.ndarray) -> np.ndarray:
    """Z-score each row (in place) over all columns or within each session; constant rows -> 0."""
    if mode == "none":
        return x
    groups = (
        [slice(None)]
        if mode == "all"
        else [np.flatnonzero(sessions == s) for s in np.unique(sessions)]
    )
    for cols in groups:
        part = x[:, cols]  # a view for "all": the chunk is never copied
        sd = part.std(axis=1, keepdims=True)
        part -= part.mean(axis=1, keepdims=True)
        np.divide(part, sd, out=part, where=sd > 0)
        x[:, cols] = part
    return x


def _condition_means(
    source: h5py.Dataset | np.ndarray,
    rows: np.ndarray,
    cond: Conditions,
    zscore: str,
    sessions: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(len(rows), n_conditions) condition means of the z-scored rows, and which rows are finite.

    A row counts as non-finite if any trial that enters its values is NaN/inf: the selected trials
    without z-scoring, every trial with it (all of them feed the mean and SD).
    """
    order = np.concatenate(cond.trials)
    counts = np.array([len(t) for t in cond.trials])
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out = np.empty((len(rows), len(cond.trials)))
    finite = np.ones(len(rows), bool)
    step = max(1, CHUNK_BYTES // (8 * source.shape[1]))
    for a in range(0, len(rows), step):
        x = np.asarray(source[rows[a : a + step], :], dtype=np.float64)
        ok = np.isfinite(x if zscore != "none" else x[:, order]).all(axis=1)
        x[~ok] = 0.0  # dropped or reported later; keeps NaN out of the arithmetic
        _zscore(x, zscore, sessions)
        out[a : a + len(x)] = np.add.reduceat(x[:, order], starts, axis=1) / counts
        finite[a : a + len(x)] = ok
    return out, finite


def read_roi_patterns(
    fmri_dir: str | Path,
    subject: str,
    sc: SubjectConditions,
    rois: dict[str, list[str]],
    zscore: str = "all",
    min_reliability: float | None = None,
    on_empty_roi: str = "fail",
    on_nonfinite: str = "drop",
) -> RoiPatterns:
    """One subject's (n_conditions, n_voxels) patterns per ROI, reading only the ROIs' rows."""
    fmri_dir = Path(fmri_dir)
    vox_path = fmri_dir / f"{subject}_VoxelMetadata.csv"
    h5_path = fmri_dir / f"{subject}_ResponseData.h5"
    rows, empty, n_voxels = _roi_rows(vox_path, rois, min_reliability)
    if empty and on_empty_roi == "fail":  # before the expensive read
        roi, reason = next(iter(empty.items()))
        raise empty_roi_error(subject, roi, rois[roi], reason)
    if not h5_path.is_file():
        raise FileNotFoundError(f"response data not found: {h5_path}")
    union = np.unique(np.concatenate([rows[r] for r in rois]))
    n_trials, sessions = len(sc.meta), sc.meta["session"].to_numpy()
    try:
        f = h5py.File(h5_path, "r")
    except OSError as err:
        raise ValueError(f"{h5_path}: cannot be opened as HDF5 ({err})") from None
    with f:
        block = _response_block(f, h5_path, n_trials, n_voxels)
        if block is not None:
            means, finite = _condition_means(block, union, sc.cond, zscore, sessions)
    if block is None:
        values = _pandas_values(h5_path, n_trials, n_voxels)
        means, finite = _condition_means(values, union, sc.cond, zscore, sessions)
    patterns, dropped = {}, {}
    for roi in rois:
        if roi in empty:
            continue
        pos = np.searchsorted(union, rows[roi])
        keep = finite[pos]
        dropped[roi] = int((~keep).sum())
        if keep.any():
            patterns[roi] = means[pos[keep]].T.copy()
        else:
            empty[roi] = f"has no voxels left after dropping {dropped[roi]} with NaN/inf betas"
    bad = {roi: n for roi, n in dropped.items() if n}
    if bad and on_nonfinite == "fail":
        raise ValueError(
            f"{subject}: {h5_path} has NaN/inf betas in the trials used, voxels per ROI: {bad} "
            "(brain.on_nonfinite=drop drops them)"
        )
    if bad:
        log.warning(
            "%s: dropped voxels with NaN/inf betas in %s, per ROI: %s", subject, h5_path.name, bad
        )
    if empty and on_empty_roi == "fail":
        roi, reason = next(iter(empty.items()))
        raise empty_roi_error(subject, roi, rois[roi], reason)
    return RoiPatterns(patterns, empty, dropped)

"""Reader for THINGS-fMRI single-trial responses (the release's "betas_csv" files).

One subject is 16-18 GB in memory, so only the rows (voxels) of the requested ROIs are read, in
chunks of increasing row indices on the HDF5 dataset, and each chunk is reduced to condition means
before the next is read: memory stays bounded by ``CHUNK_BYTES`` plus the (voxels x conditions)
result, whatever the ROI size. Trial order differs between subjects, so conditions are always
matched by stimulus name. See docs/data-formats.md for the format and the three selections.

The steps are separate functions so that `snnrsa.brain` can check the images and the RDM cache
between reading the (cheap) stimulus metadata and the (expensive) responses.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

SELECTIONS = ("exemplar01", "concept_mean", "test100")
ZSCORES = ("none", "all", "session")
EMPTY_ROI_POLICIES = ("fail", "skip")
NONFINITE_POLICIES = ("drop", "fail")
STIMULUS_COLUMNS = ["trial_type", "session", "run", "stimulus", "concept"]
RELIABILITY_COLUMN = "nc_testset"
CHUNK_BYTES = 1 << 27  # float64 response rows read per HDF5 call (128 MiB)
_BLOCK = re.compile(r"block\d+_values")


@dataclass
class BrainPatterns:
    """Condition x voxel response patterns per ROI and subject, conditions aligned by name.

    With ``on_empty_roi="skip"`` a ROI that is empty for any subject is absent for all of them, so
    every ``patterns[roi]`` list stays aligned with ``subjects``.
    """

    subjects: list[str]
    stimuli: list[str]  # condition names: file names (exemplar01, test100) or concepts
    image_relpaths: list[list[str]]  # per condition, the "concept/file.jpg" images it averages
    patterns: dict[str, list[np.ndarray]]  # roi -> per subject (n_conditions, n_voxels) float64
    sessions: np.ndarray  # (n_subjects, n_conditions); -1 where a condition spans sessions
    runs: np.ndarray  # (n_subjects, n_conditions); -1 where a condition spans runs


@dataclass
class Conditions:
    names: list[str]
    relpaths: list[list[str]]
    trials: list[np.ndarray]  # trial (column) indices averaged into each condition


@dataclass
class SubjectConditions:
    """One subject's trial table and selected conditions, with each condition's session and run."""

    meta: pd.DataFrame
    cond: Conditions
    sessions: np.ndarray  # (n_conditions,), -1 where a condition spans sessions
    runs: np.ndarray  # (n_conditions,), -1 where a condition spans (session, run) pairs


@dataclass
class RoiPatterns:
    """One subject's condition patterns per ROI, and why a ROI ended up without voxels."""

    patterns: dict[str, np.ndarray]  # roi -> (n_conditions, n_voxels)
    empty: dict[str, str]  # roi -> reason (only with on_empty_roi="skip")
    dropped: dict[str, int]  # roi -> voxels dropped for NaN/inf betas


def check_options(
    selection: str, zscore: str, on_empty_roi: str = "fail", on_nonfinite: str = "drop"
) -> None:
    """Reject unknown option values before any file is opened."""
    for key, value, allowed in (
        ("selection", selection, SELECTIONS),
        ("zscore", zscore, ZSCORES),
        ("on_empty_roi", on_empty_roi, EMPTY_ROI_POLICIES),
        ("on_nonfinite", on_nonfinite, NONFINITE_POLICIES),
    ):
        if value not in allowed:
            raise ValueError(f"unknown {key} {value!r}; expected one of {allowed}")


def subject_files(fmri_dir: str | Path, subject: str) -> dict[str, Path]:
    """The three release files of a subject; all must exist (named in the error)."""
    fmri_dir = Path(fmri_dir)
    files = {
        "responses": fmri_dir / f"{subject}_ResponseData.h5",
        "stimuli": fmri_dir / f"{subject}_StimulusMetadata.csv",
        "voxels": fmri_dir / f"{subject}_VoxelMetadata.csv",
    }
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{subject}: THINGS-fMRI files not found: {missing}")
    return files


def select_conditions(meta: pd.DataFrame, selection: str) -> Conditions:
    """The conditions of a stimulus selection, from one subject's stimulus metadata.

    exemplar01: per concept, the alphabetically first train image (its single trial); conditions
    sorted by concept. concept_mean: all train trials of each concept, sorted by concept.
    test100: every test image, averaged over its repetitions, sorted by file name.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"unknown selection {selection!r}; expected one of {SELECTIONS}")
    kind = meta["trial_type"].astype(str)
    train = meta[kind == "train"]
    names, relpaths, trials = [], [], []
    if selection == "test100":
        test = meta[kind == "test"]
        for stimulus, group in sorted(test.groupby("stimulus"), key=lambda kv: kv[0]):
            names.append(stimulus)
            relpaths.append([f"{group['concept'].iloc[0]}/{stimulus}"])
            trials.append(group.index.to_numpy())
    else:
        for concept, group in sorted(train.groupby("concept"), key=lambda kv: kv[0]):
            files = sorted(group["stimulus"].unique())
            if selection == "exemplar01":
                names.append(files[0])
                relpaths.append([f"{concept}/{files[0]}"])
                trials.append(group.index[group["stimulus"] == files[0]].to_numpy())
            else:
                names.append(concept)
                relpaths.append([f"{concept}/{f}" for f in files])
                trials.append(group.index.to_numpy())
    if not names:
        raise ValueError(
            f"selection {selection!r} found no trials (trial_type values: {sorted(kind.unique())})"
        )
    return Conditions(names, relpaths, trials)


def _read_stimulus_metadata(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"stimulus metadata not found: {path}")
    meta = pd.read_csv(path)
    missing = [c for c in STIMULUS_COLUMNS if c not in meta.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; expected {STIMULUS_COLUMNS}")
    if "trial_id" in meta.columns and not np.array_equal(meta["trial_id"], np.arange(len(meta))):
        raise ValueError(f"{path}: trial_id must equal the row index 0..{len(meta) - 1}")
    return meta


def _one_value(values: np.ndarray) -> int:
    return int(values[0]) if len(np.unique(values)) == 1 else -1


def read_conditions(fmri_dir: str | Path, subject: str, selection: str) -> SubjectConditions:
    """A subject's selected conditions from its stimulus metadata (cheap: no responses read)."""
    meta = _read_stimulus_metadata(Path(fmri_dir) / f"{subject}_StimulusMetadata.csv")
    cond = select_conditions(meta, selection)
    session, run = meta["session"].to_numpy(), meta["run"].to_numpy()
    sessions = np.array([_one_value(session[t]) for t in cond.trials])
    # A run number repeats across sessions: one run means one (session, run) pair.
    runs = np.array([_one_value(run[t]) if s >= 0 else -1 for t, s in zip(cond.trials, sessions)])
    return SubjectConditions(meta, cond, sessions, runs)


def align_conditions(
    subjects: list[str], names: list[list[str]], selection: str
) -> list[np.ndarray]:
    """Per subject, the positions of the first subject's conditions in its own condition list."""
    reference = names[0]
    orders = []
    for subject, own in zip(subjects, names):
        position = {name: i for i, name in enumerate(own)}
        missing = [n for n in reference if n not in position]
        extra = sorted(set(position) - set(reference))
        if missing or extra:
            raise ValueError(
                f"{subject}: conditions differ from {subjects[0]}'s for selection {selection!r}: "
                f"missing {missing[:10]} ({len(missing)}), extra {extra[:10]} ({len(extra)})"
            )
        orders.append(np.array([position[n] for n in reference]))
    return orders


def check_images(paths: list[list[Path]], images_dir: Path) -> None:
    """Fail before any response file or model is touched when stimulus images are missing."""
    unique = sorted({p for group in paths for p in group})
    missing = [str(p) for p in unique if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"brain.images_dir={images_dir}: {len(missing)} of {len(unique)} stimulus images are "
            f"missing (expected object_images/<concept>/<file>), e.g. {missing[:5]}"
        )


def empty_roi_error(subject: str, roi: str, columns: list[str], reason: str) -> ValueError:
    return ValueError(
        f"{subject}: ROI {roi!r} ({' | '.join(columns)}) {reason} "
        "(brain.on_empty_roi=skip drops the ROI with a warning)"
    )


def keep_rois(
    rois: dict[str, list[str]], empty: dict[str, dict[str, str]], on_empty_roi: str
) -> list[str]:
    """ROIs with voxels for every subject; empty[subject][roi] = why that ROI has none.

    skip drops a ROI for all subjects when any lacks it: RDM stacks stay aligned with the subject
    list, so a score table can never hold a NaN or a mislabelled subject for it.
    """
    for subject, reasons in empty.items():
        for roi, reason in reasons.items():
            if on_empty_roi == "fail":
                raise empty_roi_error(subject, roi, rois[roi], reason)
            log.warning(
                "%s: ROI %r (%s) %s; dropping %r for all subjects (brain.on_empty_roi=skip)",
                subject,
                roi,
                " | ".join(rois[roi]),
                reason,
                roi,
            )
    dropped = {roi for reasons in empty.values() for roi in reasons}
    kept = [roi for roi in rois if roi not in dropped]
    if not kept:
        raise ValueError(f"every ROI is empty for some subject: {empty}")
    return kept


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


def load_brain_patterns(
    fmri_dir: str | Path,
    subjects: list[str],
    rois: dict[str, list[str]],
    selection: str = "exemplar01",
    zscore: str = "all",
    *,
    min_reliability: float | None = None,
    on_empty_roi: str = "fail",
    on_nonfinite: str = "drop",
) -> BrainPatterns:
    """Per-ROI condition patterns of each subject, from ``<fmri_dir>/<subject>_*`` files.

    rois maps a name to the voxel-metadata columns whose union it is, e.g. {"LOC": ["lLOC",
    "rLOC"]}. zscore (none | all | session) is applied per voxel to all trials before selection.
    min_reliability keeps voxels with nc_testset >= it. on_empty_roi: fail, or skip (the ROI is
    dropped for all subjects, with a warning). on_nonfinite: drop voxels with NaN/inf betas in the
    trials used (count logged), or fail.
    """
    check_options(selection, zscore, on_empty_roi, on_nonfinite)
    if not subjects or not rois:
        raise ValueError("need at least one subject and one ROI")
    per_subject = [read_conditions(fmri_dir, s, selection) for s in subjects]
    orders = align_conditions(subjects, [sc.cond.names for sc in per_subject], selection)
    read = [
        read_roi_patterns(
            fmri_dir, s, sc, rois, zscore, min_reliability, on_empty_roi, on_nonfinite
        )
        for s, sc in zip(subjects, per_subject)
    ]
    kept = keep_rois(rois, {s: r.empty for s, r in zip(subjects, read) if r.empty}, on_empty_roi)
    reference = per_subject[0].cond
    return BrainPatterns(
        subjects=list(subjects),
        stimuli=list(reference.names),
        image_relpaths=reference.relpaths,
        patterns={r: [p.patterns[r][o] for p, o in zip(read, orders)] for r in kept},
        sessions=np.stack([sc.sessions[o] for sc, o in zip(per_subject, orders)]),
        runs=np.stack([sc.runs[o] for sc, o in zip(per_subject, orders)]),
    )

"""Reader for THINGS-fMRI single-trial responses (the release's "betas_csv" files): stimulus
metadata, the three condition selections and their alignment across subjects.

Trial order differs between subjects, so conditions are always matched by stimulus name. See
docs/data-formats.md for the format and the three selections. The responses themselves are read
ROI by ROI, in bounded chunks, by ``things_responses``.

The steps are separate functions so that `snnrsa.brain` can check the images and the RDM cache
between reading the (cheap) stimulus metadata and the (expensive) responses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from snnrsa.data.things_responses import empty_roi_error, read_roi_patterns

log = logging.getLogger(__name__)

SELECTIONS = ("exemplar01", "concept_mean", "test100")
ZSCORES = ("none", "all", "session")
EMPTY_ROI_POLICIES = ("fail", "skip")
NONFINITE_POLICIES = ("drop", "fail")
STIMULUS_COLUMNS = ["trial_type", "session", "run", "stimulus", "concept"]


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
    fmri_runs: np.ndarray  # (n_subjects, n_conditions); -1 where a condition spans fMRI runs


@dataclass
class Conditions:
    names: list[str]
    relpaths: list[list[str]]
    trials: list[np.ndarray]  # trial (column) indices averaged into each condition


@dataclass
class SubjectConditions:
    """One subject's trial table and selected conditions, with each condition's session and fMRI
    run."""

    meta: pd.DataFrame
    cond: Conditions
    sessions: np.ndarray  # (n_conditions,), -1 where a condition spans sessions
    fmri_runs: np.ndarray  # (n_conditions,), -1 where a condition spans (session, run) pairs


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
    session, fmri_run = meta["session"].to_numpy(), meta["run"].to_numpy()
    sessions = np.array([_one_value(session[t]) for t in cond.trials])
    # A run number repeats across sessions: one fMRI run means one (session, run) pair.
    fmri_runs = np.array([_one_value(fmri_run[t]) if s >= 0 else -1
                          for t, s in zip(cond.trials, sessions)])
    return SubjectConditions(meta, cond, sessions, fmri_runs)


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
        fmri_runs=np.stack([sc.fmri_runs[o] for sc, o in zip(per_subject, orders)]),
    )

"""Brain side of RSA: per ROI and subject, the RDM over the evaluation stimuli, and the images."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from snnrsa.rsa import SplitHalfCeiling, correlation_rdm, split_half_ceiling

# the visual hierarchy, early to late (EVC, the 92-image set's early visual cortex, before LOC/IT)
ROI_HIERARCHY = ("V1", "V2", "V3", "hV4", "EVC", "LOC", "IT")


def roi_order(rois: Sequence[str]) -> list[str]:
    """ROIs along the visual hierarchy (``ROI_HIERARCHY``), unknown ROIs after it alphabetically
    (ignoring case, so that e.g. hV4-like names do not sort after every capital)."""
    known = ROI_HIERARCHY
    return sorted(set(rois), key=lambda r: (known.index(r) if r in known else len(known),
                                            r.lower(), r))



@dataclass
class Brain:
    subjects: list[str]
    stimuli: list[str]  # condition names, RDM order
    image_paths: list[list[Path]]  # per condition, images whose model features are averaged
    rdms: dict[str, np.ndarray]  # roi -> (n_subjects, n, n)
    sessions: np.ndarray  # (n_subjects, n) session of each condition, -1 when averaged
    fmri_runs: np.ndarray  # (n_subjects, n) fMRI run of each condition (within its session)
    # roi -> (n_subjects, n_sessions, n, n): per-session RDMs kept (rdm_file, sessions=separate)
    session_rdms: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def rois(self) -> list[str]:
        return list(self.rdms)

    def cross_fmri_run_pairs(self) -> np.ndarray:
        """Boolean (n, n) mask of stimulus pairs shown in different fMRI runs for every subject (the
        corrected analysis: same-run pairs share slow drifts and order effects)."""
        if (self.fmri_runs < 0).any() or (self.sessions < 0).any():
            raise ValueError("cross-fMRI-run pairs need each condition's session and run; this "
                             "selection averages over several (use selection=exemplar01)")
        run_id = self.sessions.astype(np.int64) * 1000 + self.fmri_runs
        return (run_id[:, :, None] != run_id[:, None, :]).all(axis=0)


def split_session_ceilings(session_rdms: np.ndarray, method: str = "spearman"
                           ) -> list[SplitHalfCeiling]:
    """Per subject, the split-session ceiling from kept session RDMs (subjects, sessions, n, n):
    mean RDM of the odd sessions (1st, 3rd, ...) against that of the even ones, Spearman-Brown
    corrected to the full data; the ceiling bounds a model's score against the session mean."""
    if session_rdms.ndim != 4 or session_rdms.shape[1] < 2:
        raise ValueError(f"session_rdms must be (subjects, sessions >= 2, n, n), got "
                         f"{session_rdms.shape}")
    return [split_half_ceiling(s[0::2].mean(axis=0), s[1::2].mean(axis=0), method)
            for s in session_rdms]


def _image_order(cfg: Any, sets: dict[str, Any], images_dir: Path, path: Path) -> list[str]:
    """Image file names in RDM order: the files' pattern descriptors (rsatoolbox), else
    ``brain.images``, else the sorted ``image_glob`` files. RDMs whose patterns name the images
    are permuted in place to that order."""
    from snnrsa.data.rdm_file import RDMFileError, match_images

    files = sorted(p.name for p in images_dir.glob(cfg.image_glob))
    names = list(cfg.images)
    for roi, rset in sets.items():
        where = f"{path}:{cfg.rois[roi]}"
        rows = match_images(rset.patterns, files, cfg.pattern_descriptor not in ("auto", "none"),
                            where)
        if rows is None:
            continue
        names = names or rows
        if sorted(rows) != sorted(names):
            raise RDMFileError(f"{where}: its patterns {rows[:3]}... are not the images "
                               f"{names[:3]}... (brain.images or another ROI)")
        perm = [rows.index(n) for n in names]
        rset.rdms = rset.rdms[:, perm][:, :, perm]
    names = names or files
    if not names:
        raise RDMFileError(f"brain.images_dir: no {cfg.image_glob!r} images in {images_dir}")
    absent = [n for n in names if not (images_dir / n).is_file()]
    if absent:
        raise RDMFileError(f"brain.images_dir: {len(absent)} images missing from {images_dir}, "
                           f"e.g. {absent[:3]}")
    return names


def _align_subjects(cfg: Any, grouped: dict[str, Any], path: Path) -> list[str]:
    """Subject labels; ROIs whose files name their subjects are permuted in place to one order."""
    from snnrsa.data.rdm_file import RDMFileError

    counts = {roi: g.rdms.shape[0] for roi, g in grouped.items()}
    if len(set(counts.values())) != 1:
        raise RDMFileError(f"{path}: ROIs hold different subject counts {counts}")
    n_subj = next(iter(counts.values()))
    if cfg.subjects:
        if len(cfg.subjects) != n_subj:
            raise RDMFileError(f"brain.subjects has {len(cfg.subjects)} labels for {n_subj} "
                               f"subjects in {path}")
        return list(cfg.subjects)
    named = {roi: g.subjects for roi, g in grouped.items() if g.subjects is not None}
    if not named:
        return [f"sub-{i + 1:02d}" for i in range(n_subj)]
    subjects = next(iter(named.values()))
    for roi, labels in named.items():
        if sorted(labels) != sorted(subjects):
            raise RDMFileError(f"{path}: ROI {roi} names subjects {labels}, another ROI "
                               f"{subjects}; set brain.subjects to pair them by position instead")
        perm = [labels.index(s) for s in subjects]
        g = grouped[roi]
        g.rdms = g.rdms[perm]
        g.sessions = None if g.sessions is None else g.sessions[perm]
    return subjects


def _rdm_file_brain(cfg: Any) -> Brain:
    """Precomputed RDMs (any form of snnrsa.data.rdm_file); every ROI must hold the same subjects
    over the same images. Subjects named in the files are aligned by name across ROIs;
    ``brain.subjects`` relabels them in order."""
    from snnrsa.data.rdm_file import RDMFileError, by_subject, check_size, read_rdm_set

    root = Path(cfg.root).expanduser()
    images_dir = root / cfg.images_dir
    if not images_dir.is_dir():
        raise RDMFileError(f"brain.images_dir: no folder {images_dir}")
    if not cfg.rois:
        raise RDMFileError("brain.rois is empty: map ROI names to variables of brain.path")
    path = root / cfg.path
    desc = {"subject": cfg.subject_descriptor, "session": cfg.session_descriptor,
            "pattern": cfg.pattern_descriptor}
    sets = {roi: read_rdm_set(path, var, cfg.axis_order, cfg.struct_axes, desc)
            for roi, var in cfg.rois.items()}
    names = _image_order(cfg, sets, images_dir, path)
    grouped = {}
    for roi, rset in sets.items():
        check_size(rset.rdms, len(names), f"{path}:{cfg.rois[roi]}")
        grouped[roi] = by_subject(rset, cfg.sessions, f"{path}:{cfg.rois[roi]}")
    subjects = _align_subjects(cfg, grouped, path)
    missing = np.full((len(subjects), len(names)), -1)
    sessions = {roi: g.sessions for roi, g in grouped.items() if g.sessions is not None}
    return Brain(subjects, names, [[images_dir / n] for n in names],
                 {roi: g.rdms for roi, g in grouped.items()}, missing, missing, sessions)


def _things_brain(cfg: Any, fmri_dir: Path, images_dir: Path) -> Brain:
    """ROI RDMs from THINGS-fMRI-format files (the release or the synthetic set).

    Cheapest work first: stimulus metadata, then the images (missing ones fail here, before any
    model work or response read), then the brain-RDM cache; only missing entries read the
    response files. A ROI empty for some subject is dropped for all of them (on_empty_roi=skip),
    so every RDM stack stays aligned with ``subjects`` and no score can be NaN.
    """
    from snnrsa.data import things
    from snnrsa.data.rdm_cache import RdmCache, RdmEntry, cache_key, resolve_cache_dir

    subjects, rois = list(cfg.subjects), {r: list(cols) for r, cols in cfg.rois.items()}
    if not subjects or not rois:
        raise ValueError("brain.subjects and brain.rois must not be empty")
    things.check_options(cfg.selection, cfg.zscore, cfg.on_empty_roi, cfg.on_nonfinite)
    cache = RdmCache(resolve_cache_dir(cfg.cache_dir, fmri_dir))
    options = {"selection": cfg.selection, "zscore": cfg.zscore,
               "min_reliability": cfg.min_reliability, "on_nonfinite": cfg.on_nonfinite}
    keys, entries, conds = {}, {}, {}
    for s in subjects:
        files = list(things.subject_files(fmri_dir, s).values())
        keys[s] = {roi: cache_key(files, columns=cols, **options) for roi, cols in rois.items()}
        entries[s] = {roi: e for roi, (key, _) in keys[s].items()
                      if (e := cache.get(s, key)) is not None}
        if len(entries[s]) < len(rois):
            conds[s] = things.read_conditions(fmri_dir, s, cfg.selection)
    # Condition names and images of each subject: from its metadata, or any of its cache entries.
    own = {s: conds[s].cond if s in conds else next(iter(entries[s].values())) for s in subjects}
    orders = things.align_conditions(subjects, [own[s].names for s in subjects], cfg.selection)
    paths = [[images_dir / "object_images" / rel for rel in rels]
             for rels in own[subjects[0]].relpaths]
    things.check_images(paths, images_dir)
    for s, sc in conds.items():
        todo = {roi: cols for roi, cols in rois.items() if roi not in entries[s]}
        read = things.read_roi_patterns(fmri_dir, s, sc, todo, cfg.zscore, cfg.min_reliability,
                                        cfg.on_empty_roi, cfg.on_nonfinite)
        for roi in todo:
            pat = read.patterns.get(roi)
            entries[s][roi] = RdmEntry(
                rdm=None if pat is None else correlation_rdm(pat), names=sc.cond.names,
                relpaths=sc.cond.relpaths, sessions=sc.sessions, fmri_runs=sc.fmri_runs,
                n_voxels=0 if pat is None else pat.shape[1], n_dropped=read.dropped.get(roi, 0),
                empty_reason=read.empty.get(roi, ""))
            key, inputs = keys[s][roi]
            cache.put(s, key, entries[s][roi], inputs)
    empty = {s: {roi: entries[s][roi].empty_reason for roi in rois if entries[s][roi].rdm is None}
             for s in subjects}
    kept = things.keep_rois(rois, {s: e for s, e in empty.items() if e}, cfg.on_empty_roi)
    rdms = {roi: np.stack([entries[s][roi].rdm[np.ix_(o, o)] for s, o in zip(subjects, orders)])
            for roi in kept}
    first = [entries[s][kept[0]] for s in subjects]
    sessions = np.stack([e.sessions[o] for e, o in zip(first, orders)])
    fmri_runs = np.stack([e.fmri_runs[o] for e, o in zip(first, orders)])
    return Brain(subjects, list(own[subjects[0]].names), paths, rdms, sessions, fmri_runs)


def load_brain(cfg: Any) -> Brain:
    """Brain RDMs for the configured evaluation set: ``brain=synthetic`` (generated once into the
    cache in the THINGS-fMRI on-disk format), ``things`` (the release), both read by the THINGS
    reader; ``rdm_file`` / ``cichy92`` (precomputed RDM stacks)."""
    if cfg.name == "rdm_file":
        return _rdm_file_brain(cfg)
    if cfg.name == "synthetic":
        from snnrsa.data.synthetic_brain import ensure_synthetic_brain

        root = ensure_synthetic_brain(
            Path(cfg.cache_dir).expanduser(),
            seed=cfg.seed,
            n_concepts=cfg.n_concepts,
            n_sessions=cfg.n_sessions,
            runs_per_session=cfg.fmri_runs_per_session,
            n_test=cfg.n_test,
            image_size=cfg.image_size,
        )
        return _things_brain(cfg, root / "fmri", root / "images")
    if cfg.name == "things":
        fmri_dir, images_dir = Path(cfg.fmri_dir).expanduser(), Path(cfg.images_dir).expanduser()
        for key, folder in (("brain.fmri_dir", fmri_dir), ("brain.images_dir", images_dir)):
            if not folder.is_dir():
                raise FileNotFoundError(f"{key}={folder}: no such folder")
        return _things_brain(cfg, fmri_dir, images_dir)
    raise ValueError(f"brain.name={cfg.name!r} is not a known evaluation set")

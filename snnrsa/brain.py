"""Brain side of RSA: per ROI and subject, the RDM over the evaluation stimuli, and the images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from snnrsa.rsa import correlation_rdm


@dataclass
class Brain:
    subjects: list[str]
    stimuli: list[str]  # condition names, RDM order
    image_paths: list[list[Path]]  # per condition, images whose model features are averaged
    rdms: dict[str, np.ndarray]  # roi -> (n_subjects, n, n)
    sessions: np.ndarray  # (n_subjects, n) session of each condition, -1 when averaged
    runs: np.ndarray  # (n_subjects, n)

    @property
    def rois(self) -> list[str]:
        return list(self.rdms)


def _rdm_file_brain(cfg: Any) -> Brain:
    """Precomputed RDM stacks; every ROI must hold the same subjects over the same images."""
    from snnrsa.data.rdm_file import load_rdm_stack

    root = Path(cfg.root).expanduser()
    images_dir = root / cfg.images_dir
    if not images_dir.is_dir():
        raise FileNotFoundError(f"brain.images_dir: no folder {images_dir}")
    names = list(cfg.images) or sorted(p.name for p in images_dir.glob(cfg.image_glob))
    if not names:
        raise FileNotFoundError(f"brain.images_dir: no {cfg.image_glob!r} images in {images_dir}")
    if not cfg.rois:
        raise ValueError("brain.rois is empty: map ROI names to variables of brain.path")
    rdms = {roi: load_rdm_stack(root / cfg.path, var, cfg.axis_order, len(names))
            for roi, var in cfg.rois.items()}
    counts = {roi: r.shape[0] for roi, r in rdms.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"{root / cfg.path}: ROIs hold different subject counts {counts}")
    n_subj = next(iter(counts.values()))
    subjects = list(cfg.subjects) or [f"sub-{i + 1:02d}" for i in range(n_subj)]
    if len(subjects) != n_subj:
        raise ValueError(f"brain.subjects has {len(subjects)} labels for {n_subj} subjects")
    missing = np.full((n_subj, len(names)), -1)
    return Brain(subjects, names, [[images_dir / n] for n in names], rdms, missing, missing)


def load_brain(cfg: Any) -> Brain:
    """Brain RDMs for the configured evaluation set (``brain=synthetic``: generated once into the
    cache, in the THINGS-fMRI on-disk format, and read back through the THINGS reader;
    ``brain=rdm_file`` / ``cichy92``: precomputed RDM stacks)."""
    if cfg.name == "rdm_file":
        return _rdm_file_brain(cfg)
    from snnrsa.data.things import load_brain_patterns

    if cfg.name == "synthetic":
        from snnrsa.data.synthetic_brain import ensure_synthetic_brain

        root = ensure_synthetic_brain(
            Path(cfg.cache_dir).expanduser(),
            seed=cfg.seed,
            n_concepts=cfg.n_concepts,
            n_sessions=cfg.n_sessions,
            runs_per_session=cfg.runs_per_session,
            n_test=cfg.n_test,
            image_size=cfg.image_size,
        )
        fmri_dir, images_dir = root / "fmri", root / "images"
    else:
        raise ValueError(f"brain.name={cfg.name!r} is not a known evaluation set")
    pats = load_brain_patterns(
        fmri_dir, list(cfg.subjects), dict(cfg.rois), selection=cfg.selection, zscore=cfg.zscore
    )
    rdms = {
        roi: np.stack([correlation_rdm(p) for p in per_subject])
        for roi, per_subject in pats.patterns.items()
    }
    paths = [[images_dir / "object_images" / rel for rel in rels] for rels in pats.image_relpaths]
    return Brain(pats.subjects, pats.stimuli, paths, rdms, pats.sessions, pats.runs)

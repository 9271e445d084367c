"""Noise ceilings: how well the true model could score given between-subject or between-session noise.

Leave-one-subject-out (Nili et al. 2014): the lower bound scores each subject against the pooled
RDM of the others, the upper bound against the pooled RDM of all subjects; both equal rsatoolbox's
`boot_noise_ceiling` (including its method-specific pooling). With 3 subjects that bound is weak,
so a split-session ceiling per subject (odd vs even sessions, Spearman-Brown corrected) is offered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata

from snnrsa.rsa._arrays import check_finite, pair_mask, rdm_vectors, to_numpy
from snnrsa.rsa.compare import canonical_method, compare, compare_vectors
from snnrsa.rsa.rdm import compute_rdm

POOLINGS = ("rsatoolbox", "mean")


def _pool(v: np.ndarray, method: str, pooling: str) -> np.ndarray:
    """Pooled RDM of rows v (kept pairs only), optimal for `method` as rsatoolbox's pool_rdm."""
    if pooling == "mean":
        return v.mean(axis=0)
    if method in ("spearman", "kendall_tau_a"):
        return rankdata(v, axis=1).mean(axis=0)
    if method in ("pearson", "whitened_pearson"):
        z = v - v.mean(axis=1, keepdims=True)
        return (z / z.std(axis=1, keepdims=True)).mean(axis=0)
    return (v / np.sqrt(np.mean(v**2, axis=1, keepdims=True))).mean(axis=0)


def loso_noise_ceiling(
    subject_rdms: Any,
    method: str = "spearman",
    mask: Any = None,
    *,
    pooling: str = "rsatoolbox",
    condensed: bool | None = None,
) -> tuple[float, float]:
    """(lower, upper) leave-one-subject-out noise ceiling of subject_rdms (subjects, n, n).

    pooling="rsatoolbox" pools as rsatoolbox does for `method` (mean of ranks for Spearman,
    of z-scores for Pearson, of RMS-normalised RDMs for cosine); pooling="mean" averages the
    dissimilarities, the mean-RDM convention (its lower bound is the plain "subject vs mean of
    the others" agreement).
    """
    method = canonical_method(method)
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    vs, n, lead = rdm_vectors(subject_rdms, "subject_rdms", condensed)
    if len(lead) != 1 or len(vs) < 2:
        raise ValueError(f"subject_rdms must be (subjects >= 2, n, n), got leading shape {lead}")
    keep = pair_mask(mask, n)
    check_finite(vs, keep, "subject_rdms")
    sel = np.ones(vs.shape[1], dtype=bool) if keep is None else keep
    kept = vs[:, sel]

    def full(pooled: np.ndarray) -> np.ndarray:
        out = np.zeros((1, vs.shape[1]))
        out[0, sel] = pooled
        return out

    n_subj = len(vs)
    lower = [
        compare_vectors(
            full(_pool(np.delete(kept, s, 0), method, pooling)), vs[s : s + 1], method, keep, n
        )[0, 0]
        for s in range(n_subj)
    ]
    upper = compare_vectors(full(_pool(kept, method, pooling)), vs, method, keep, n)[0]
    return float(np.mean(lower)), float(np.mean(upper))


def spearman_brown(r: Any, factor: float = 2.0) -> Any:
    """Reliability of data `factor` times as long as the data giving correlation r."""
    r = np.asarray(r, dtype=float)
    return factor * r / (1.0 + (factor - 1.0) * r)


@dataclass(frozen=True)
class SplitHalfCeiling:
    """Split-half agreement, its Spearman-Brown reliability, and the ceiling sqrt(reliability).

    The ceiling bounds the correlation any model can reach with the full-data RDM; it is NaN
    when the reliability is not positive.
    """

    split_r: float
    reliability: float
    ceiling: float


def split_half_ceiling(
    rdm_a: Any, rdm_b: Any, method: str = "spearman", mask: Any = None
) -> SplitHalfCeiling:
    """Ceiling from two RDMs of the same subject estimated on disjoint halves of the data."""
    r = float(compare(rdm_a, rdm_b, method, mask))
    rel = float(spearman_brown(r))
    return SplitHalfCeiling(r, rel, float(np.sqrt(rel)) if rel > 0 else float("nan"))


def split_session_ceiling(
    patterns: Any,
    conditions: Any,
    sessions: Any,
    *,
    rdm_method: str = "correlation",
    method: str = "spearman",
    mask: Any = None,
) -> tuple[SplitHalfCeiling, np.ndarray]:
    """Single-subject ceiling from odd vs even sessions (1st, 3rd, ... of the sorted labels).

    patterns (n_obs, features...) labelled by `conditions` and `sessions`; each half's condition
    means give an RDM (`rdm_method`), the halves are compared with `method` and the agreement is
    Spearman-Brown corrected to full length. Returns (ceiling, condition labels in RDM order).
    """
    x = to_numpy(patterns, "patterns")
    cond = np.asarray(to_numpy(conditions, "conditions", dtype=None))
    sess = np.asarray(to_numpy(sessions, "sessions", dtype=None))
    if cond.shape != (len(x),) or sess.shape != (len(x),):
        raise ValueError(f"conditions and sessions must have shape ({len(x)},)")
    labels, cidx = np.unique(cond, return_inverse=True)
    folds, fidx = np.unique(sess, return_inverse=True)
    if len(folds) < 2:
        raise ValueError("sessions must contain at least 2 distinct values")
    halves = []
    for parity in (0, 1):
        rows = fidx % 2 == parity
        present = np.bincount(cidx[rows], minlength=len(labels))
        if (present == 0).any():
            missing = labels[np.flatnonzero(present == 0)[0]]
            half = ("odd", "even")[parity]
            raise ValueError(f"condition {missing!r} is missing from the {half} sessions")
        flat = x[rows].reshape(int(rows.sum()), -1)
        means = np.zeros((len(labels), flat.shape[1]))
        np.add.at(means, cidx[rows], flat)
        halves.append(compute_rdm(means / present[:, None], rdm_method))
    return split_half_ceiling(halves[0], halves[1], method, mask), labels

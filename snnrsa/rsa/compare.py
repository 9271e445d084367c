"""Comparisons between RDMs over the strict upper triangle."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def upper_tri(rdm: np.ndarray) -> np.ndarray:
    """Strict upper triangle of a square RDM, row-major (scipy's squareform order)."""
    n = rdm.shape[-1]
    i, j = np.triu_indices(n, k=1)
    return rdm[..., i, j]


def spearman(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Spearman rho between two RDMs (square or already vectorised), optionally over masked pairs."""
    va = upper_tri(a) if a.ndim == 2 else a
    vb = upper_tri(b) if b.ndim == 2 else b
    if mask is not None:
        m = upper_tri(mask) if mask.ndim == 2 else mask
        va, vb = va[m.astype(bool)], vb[m.astype(bool)]
    ra = rankdata(va)
    rb = rankdata(vb)
    ra -= ra.mean()
    rb -= rb.mean()
    return float(ra @ rb / np.sqrt((ra @ ra) * (rb @ rb)))

"""Representational dissimilarity matrices (RDMs) from pattern matrices (conditions x features)."""

from __future__ import annotations

import numpy as np


def correlation_rdm(patterns: np.ndarray) -> np.ndarray:
    """1 - Pearson r between rows, via one centred, normalised Gram matrix (float64)."""
    x = np.asarray(patterns, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"patterns must be 2-D (conditions x features), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("patterns contain NaN or infinite values")
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.sqrt(np.einsum("ij,ij->i", x, x))
    if np.any(norm == 0):
        bad = np.flatnonzero(norm == 0)[:5].tolist()
        raise ValueError(f"constant pattern(s) at rows {bad}: correlation distance undefined")
    x /= norm[:, None]
    rdm = 1.0 - x @ x.T
    np.fill_diagonal(rdm, 0.0)
    return (rdm + rdm.T) / 2

"""Conversion to and from `rsatoolbox.rdm.RDMs`, so results can be checked or plotted there.

rsatoolbox marks excluded pairs with NaN; snnrsa uses explicit pair masks. The two meet here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from snnrsa.rsa._arrays import pair_mask, rdm_vectors


def to_rsatoolbox(
    rdms: Any,
    *,
    mask: Any = None,
    dissimilarity_measure: str | None = None,
    rdm_descriptors: Mapping[str, Any] | None = None,
    pattern_descriptors: Mapping[str, Any] | None = None,
    condensed: bool | None = None,
) -> Any:
    """`rsatoolbox.rdm.RDMs` holding the RDM stack (flattened to n_rdm); masked-out pairs -> NaN."""
    from rsatoolbox.rdm import RDMs

    vecs, n, _ = rdm_vectors(rdms, "rdms", condensed)
    keep = pair_mask(mask, n)
    if keep is not None:
        vecs = vecs.copy()
        vecs[:, ~keep] = np.nan
    return RDMs(
        vecs,
        dissimilarity_measure=dissimilarity_measure,
        rdm_descriptors=dict(rdm_descriptors) if rdm_descriptors else None,
        pattern_descriptors=dict(pattern_descriptors) if pattern_descriptors else None,
    )


def from_rsatoolbox(rdms: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """(matrices (n_rdm, n, n) float64, pair mask (n, n) or None) from `rsatoolbox.rdm.RDMs`.

    The mask keeps the pairs finite in every RDM (None when all are); the matrices keep NaNs.
    """
    if not hasattr(rdms, "get_matrices"):
        raise TypeError(f"rdms must be rsatoolbox.rdm.RDMs, got {type(rdms).__name__}")
    mats = np.asarray(rdms.get_matrices(), dtype=np.float64)
    finite = np.isfinite(mats).all(axis=0)
    np.fill_diagonal(finite, True)
    return mats, None if finite.all() else finite

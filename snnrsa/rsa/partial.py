"""Partial RSA: model-brain agreement beyond what low-level reference RDMs already explain.

Both RDMs are ranked (for Spearman) over the compared pairs together with the references; the
references and an intercept are regressed out of each; the residuals are correlated. With one
reference this is the textbook partial correlation (r_xy - r_xz r_yz) / sqrt((1 - r_xz^2)(1 - r_yz^2))
on ranks. Early-visual alignment that vanishes here was pixel/luminance similarity, not shared
representation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from snnrsa.rsa._arrays import check_finite, pair_mask, rdm_vectors
from snnrsa.rsa.compare import prepare, unit_rows

PARTIAL_METHODS = ("spearman", "pearson")


def partial_compare(
    a: Any,
    b: Any,
    references: Sequence[Any] | Any,
    method: str = "spearman",
    mask: Any = None,
    *,
    condensed: bool | None = None,
) -> np.ndarray:
    """Partial correlation of every RDM in `a` with every RDM in `b`: shape a_lead + b_lead.

    `references` is one RDM, a sequence of RDMs, or a stack (r, n, n), in the same form as a and b.
    """
    if method not in PARTIAL_METHODS:
        raise ValueError(f"method must be one of {PARTIAL_METHODS}, got {method!r}")
    va, n, lead_a = rdm_vectors(a, "a", condensed)
    vb, nb, lead_b = rdm_vectors(b, "b", condensed)
    if isinstance(references, Sequence) and not isinstance(references, np.ndarray):
        if len(references) == 0:
            raise ValueError("references must hold at least one RDM")
        refs = [rdm_vectors(r, f"references[{k}]", condensed) for k, r in enumerate(references)]
        vr = np.concatenate([r[0] for r in refs])
        nr = {r[1] for r in refs}
    else:
        got = rdm_vectors(references, "references", condensed)
        vr, nr = got[0], {got[1]}
    if nr != {n} or nb != n:
        raise ValueError(f"a, b and references must share n; got {n}, {nb}, {sorted(nr)}")
    keep = pair_mask(mask, n)
    for name, v in (("a", va), ("b", vb), ("references", vr)):
        check_finite(v, keep, name)
    if keep is not None:
        va, vb, vr = va[:, keep], vb[:, keep], vr[:, keep]
    design = np.column_stack([np.ones(va.shape[1]), prepare(vr, method).T])
    q, r = np.linalg.qr(design)
    if np.abs(np.diag(r)).min() < 1e-10 * np.abs(np.diag(r)).max():
        raise ValueError("references are collinear (or constant) over the compared pairs")

    def residual(v: np.ndarray) -> np.ndarray:
        x = prepare(v, method)
        return x - (x @ q) @ q.T

    return (unit_rows(residual(va)) @ unit_rows(residual(vb)).T).reshape(lead_a + lead_b)


def partial_spearman(a: Any, b: Any, references: Sequence[Any] | Any, mask: Any = None) -> float:
    """Partial Spearman between two RDMs controlling for the reference RDM(s)."""
    return float(partial_compare(a, b, references, "spearman", mask))

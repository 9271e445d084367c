"""Comparisons between RDMs over the strict upper triangle, vectorised over stacks of RDMs.

`compare(a, b)` scores every RDM of stack `a` against every RDM of stack `b` in one call (the
run loop scores layers x ROIs x subjects per checkpoint, through `compare_each`), with an
optional pair mask such as the cross-run pairs. Methods and the rsatoolbox names they equal:

- "spearman" (rsatoolbox "spearman"; average ranks for ties),
- "pearson" ("corr"),
- "kendall_tau_a" ("tau-a"),
- "cosine" ("cosine"),
- "whitened_cosine" ("cosine_cov" with sigma_k=None; Diedrichsen et al. 2021),
- "whitened_pearson" ("corr_cov" with sigma_k=None).

A vector with zero variance (or zero norm for cosine) gives NaN rather than rsatoolbox's 0,
because the score is undefined, not zero.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import kendalltau, rankdata

from snnrsa.rsa._arrays import pair_index, paired_vectors, rdm_vectors

COMPARE_METHODS = (
    "spearman",
    "pearson",
    "kendall_tau_a",
    "cosine",
    "whitened_cosine",
    "whitened_pearson",
)
ALIASES = {
    "corr": "pearson",
    "tau-a": "kendall_tau_a",
    "cosine_cov": "whitened_cosine",
    "corr_cov": "whitened_pearson",
}
CONVENTIONS = ("per_subject", "mean_rdm")


def canonical_method(method: str) -> str:
    """Canonical comparison name for `method` (rsatoolbox aliases accepted)."""
    m = ALIASES.get(method, method)
    if m not in COMPARE_METHODS:
        raise ValueError(
            f"method must be one of {COMPARE_METHODS} (or {sorted(ALIASES)}), got {method!r}"
        )
    return m


def upper_tri(rdm: np.ndarray) -> np.ndarray:
    """Strict upper triangle of a square RDM, row-major (scipy's squareform order)."""
    n = rdm.shape[-1]
    i, j = np.triu_indices(n, k=1)
    return rdm[..., i, j]


def compare(
    a: Any,
    b: Any,
    method: str = "spearman",
    mask: Any = None,
    *,
    condensed: bool | None = None,
) -> np.ndarray:
    """Scores of every RDM in `a` against every RDM in `b`: shape a_lead + b_lead.

    `a` and `b` are square RDMs (..., n, n) or condensed vectors (..., n(n-1)/2), numpy or torch;
    `mask` (n, n) or (n(n-1)/2,) boolean keeps the pairs to compare. NaNs are allowed only on pairs
    the mask drops. For single RDMs the result is a 0-d array (use float()).
    """
    method = canonical_method(method)
    va, vb, n, keep, lead_a, lead_b = paired_vectors(a, b, mask, condensed)
    return compare_vectors(va, vb, method, keep, n).reshape(lead_a + lead_b)


def compare_vectors(
    va: np.ndarray, vb: np.ndarray, method: str, keep: np.ndarray | None, n: int
) -> np.ndarray:
    """(ka, kb) scores of validated condensed vectors; the engine behind `compare`."""
    if method.startswith("whitened"):
        wa = whitened_vectors(va, keep, n, centre=method == "whitened_pearson")
        wb = whitened_vectors(vb, keep, n, centre=method == "whitened_pearson")
        return unit_rows(wa) @ unit_rows(wb).T
    if keep is not None:
        va, vb = va[:, keep], vb[:, keep]
    if method == "kendall_tau_a":
        return np.array([[kendall_tau_a(x, y) for y in vb] for x in va]).reshape(len(va), len(vb))
    return unit_rows(prepare(va, method)) @ unit_rows(prepare(vb, method)).T


def prepare(v: np.ndarray, method: str) -> np.ndarray:
    """Rank (spearman) and centre (spearman, pearson) rows; cosine is left as is."""
    if method == "spearman":
        v = rankdata(v, axis=1)
    if method in ("spearman", "pearson"):
        v = v - v.mean(axis=1, keepdims=True)
    return v


def unit_rows(v: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm; zero rows become NaN (their correlation is undefined)."""
    norm = np.sqrt(np.einsum("ij,ij->i", v, v))
    with np.errstate(invalid="ignore", divide="ignore"):
        return v / np.where(norm > 0, norm, np.nan)[:, None]


def kendall_tau_a(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall tau-a: (concordant - discordant) / all pairs, tied pairs counting as neither.

    Recovered from scipy's tau-b, (C - D) / sqrt((n0 - n1)(n0 - n2)), and the tie counts.
    """
    m = len(x)
    n0 = m * (m - 1) / 2
    ties_x = _tied_pairs(x)
    ties_y = _tied_pairs(y)
    if ties_x == n0 or ties_y == n0:
        return 0.0
    tau_b = kendalltau(x, y).statistic
    return float(np.clip(tau_b * np.sqrt((n0 - ties_x) * (n0 - ties_y)) / n0, -1.0, 1.0))


def _tied_pairs(x: np.ndarray) -> float:
    counts = np.unique(x, return_counts=True)[1].astype(float)
    return float((counts * (counts - 1) / 2).sum())


def whitened_vectors(v: np.ndarray, keep: np.ndarray | None, n: int, centre: bool) -> np.ndarray:
    """RDM vectors mapped to the double-centred second-moment space where entries are isotropic.

    Same as rsatoolbox's `_cov_weighting` with sigma_k=None: G = -D/2 is double-centred (with a
    pair mask, by the weighted projection that makes every row of the kept entries sum to zero),
    off-diagonal entries weighted by sqrt(2), the diagonal appended.
    """
    i, j = pair_index(n)
    if keep is None:
        keep = np.ones(len(i), dtype=bool)
    ik, jk = i[keep], j[keep]
    x = v[:, keep]
    if centre:
        x = x - x.mean(axis=1, keepdims=True)
    x = -0.5 * x
    sq = np.zeros((len(x), n, n))
    sq[:, ik, jk] = x
    sq[:, jk, ik] = x
    adj = np.zeros((n, n))
    adj[ik, jk] = 1.0
    adj[jk, ik] = 1.0
    gram = 0.5 * (np.diag(adj.sum(axis=1)) + adj) + np.eye(n)
    beta = np.linalg.solve(gram, sq.sum(axis=2).T).T
    pairs = (x - 0.5 * (beta[:, ik] + beta[:, jk])) * np.sqrt(2.0)
    return np.concatenate([pairs, -beta], axis=1)


def spearman(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Spearman rho between two RDMs (square or already vectorised), optionally over masked pairs."""
    return float(compare(a, b, "spearman", mask))


def convention_vectors(
    models: Any, subject_rdms: Any, convention: str, condensed: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised models (lead + pairs) and brain RDMs, the subject axis kept ("per_subject")
    or averaged away ("mean_rdm"), checked to share one condition count."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    vb, n, lead_b = rdm_vectors(subject_rdms, "subject_rdms", condensed)
    if len(lead_b) == 0:
        raise ValueError("subject_rdms needs a subject axis: (..., subjects, n, n)")
    va, na, lead_a = rdm_vectors(models, "models", condensed)
    if na != n:
        raise ValueError(f"models have {na} conditions but subject_rdms have {n}")
    vb = vb.reshape(lead_b + (vb.shape[-1],))
    if convention == "mean_rdm":
        vb = vb.mean(axis=-2)
    return va.reshape(lead_a + (va.shape[-1],)), vb


def score(
    models: Any,
    subject_rdms: Any,
    method: str = "spearman",
    mask: Any = None,
    *,
    convention: str = "per_subject",
    condensed: bool | None = None,
) -> np.ndarray:
    """Model-brain scores under the study's two conventions; shape models_lead + brains_lead[:-1].

    `subject_rdms` has subjects on its last leading axis, e.g. (roi, subject, n, n).
    "per_subject" scores each subject and averages the scores (the 2605.30556 convention);
    "mean_rdm" averages the subject RDMs, then scores once (the companion paper's convention).
    """
    va, vb = convention_vectors(models, subject_rdms, convention, condensed)
    scores = compare(va, vb, method, mask, condensed=True)
    return scores if convention == "mean_rdm" else scores.mean(axis=-1)


def compare_each(a: Any, b: Any, method: str = "spearman", mask: Any = None) -> np.ndarray:
    """``compare(a, b)`` with each RDM of ``a`` and ``b`` prepared (ranked, centred, scaled) once,
    then every pair scored by its own dot product, so each score equals ``compare(a[i], b[j])``
    to the last bit (one batched matrix product may round differently); shape a_lead + b_lead.
    The run loop scores every checkpoint this way, keeping its numbers across versions."""
    method = canonical_method(method)
    va, vb, n, keep, lead_a, lead_b = paired_vectors(a, b, mask, None)
    if method in ("kendall_tau_a", "whitened_cosine", "whitened_pearson"):
        return compare_vectors(va, vb, method, keep, n).reshape(lead_a + lead_b)
    if keep is not None:
        va, vb = va[:, keep], vb[:, keep]
    ua, ub = unit_rows(prepare(va, method)), unit_rows(prepare(vb, method))
    out = np.array([[(x[None] @ y[None].T)[0, 0] for y in ub] for x in ua])
    return out.reshape(lead_a + lead_b)

"""Tests across seeds and stimuli, effect sizes and multiple-comparison corrections.

The study compares learning rules over 5 seeds: with so few units only an exact test is honest,
hence the exact paired sign-flip test (2^5 = 32 assignments). Corrections are applied within
named families, as the study's three families (rule vs BP, epoch 0 vs 1, monotone trend).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from snnrsa.rsa._arrays import check_finite, pair_index, pair_mask, rdm_vectors
from snnrsa.rsa.compare import canonical_method, compare_vectors, prepare, unit_rows

ALTERNATIVES = ("two-sided", "greater", "less")
MAX_SIGN_FLIP_N = 24


@dataclass(frozen=True)
class TestResult:
    """Observed statistic, p-value and the null distribution it was read from."""

    statistic: float
    p: float
    null: np.ndarray


def _check_alternative(alternative: str) -> None:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")


def _paired_diff(a: Any, b: Any) -> np.ndarray:
    x = np.asarray(a, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"a must be 1-D (one value per seed), got shape {x.shape}")
    if b is not None:
        y = np.asarray(b, dtype=float)
        if y.shape != x.shape:
            raise ValueError(f"a and b must have the same shape, got {x.shape} and {y.shape}")
        x = x - y
    if not np.isfinite(x).all():
        raise ValueError("paired values contain NaN or infinite entries")
    return x


def sign_flip_test(a: Any, b: Any = None, alternative: str = "two-sided") -> TestResult:
    """Exact paired sign-flip (permutation) test of mean(a - b) = 0 over all 2^n sign assignments.

    "greater" tests mean(a - b) > 0. p counts assignments at least as extreme as the observed one
    (the identity included), so the smallest two-sided p with 5 seeds is 2/32 = 0.0625.
    """
    _check_alternative(alternative)
    d = _paired_diff(a, b)
    if not 1 <= len(d) <= MAX_SIGN_FLIP_N:
        raise ValueError(f"sign_flip_test needs 1..{MAX_SIGN_FLIP_N} pairs, got {len(d)}")
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
    null = signs @ d / len(d)
    obs = float(d.mean())
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))
    if alternative == "greater":
        hits = null >= obs - tol
    elif alternative == "less":
        hits = null <= obs + tol
    else:
        hits = np.abs(null) >= abs(obs) - tol
    return TestResult(obs, float(hits.mean()), null)


def cohens_d_paired(a: Any, b: Any = None) -> float:
    """Paired Cohen's d: mean(a - b) / sd(a - b) with ddof=1 (d_z)."""
    d = _paired_diff(a, b)
    if len(d) < 2:
        raise ValueError("cohens_d_paired needs at least 2 pairs")
    sd = d.std(ddof=1)
    return float(d.mean() / sd) if sd > 0 else float("nan")


def permutation_test(
    model_rdm: Any,
    brain_rdm: Any,
    method: str = "spearman",
    mask: Any = None,
    *,
    n_perm: int = 10000,
    seed: int = 0,
    alternative: str = "greater",
    chunk: int = 256,
) -> TestResult:
    """Stimulus-label permutation test of one model-brain comparison.

    The model RDM's rows and columns are permuted together; the pair mask stays with the brain
    RDM (it describes how the brain data were acquired). p = (1 + #null as extreme) / (1 + n_perm).
    """
    _check_alternative(alternative)
    method = canonical_method(method)
    vm, n, lead_m = rdm_vectors(model_rdm, "model_rdm")
    vb, nb, lead_b = rdm_vectors(brain_rdm, "brain_rdm")
    if lead_m or lead_b:
        raise ValueError("permutation_test takes one model RDM and one brain RDM")
    if n != nb:
        raise ValueError(f"model_rdm has {n} conditions but brain_rdm has {nb}")
    keep = pair_mask(mask, n)
    check_finite(vm, None, "model_rdm")
    check_finite(vb, keep, "brain_rdm")
    obs = float(compare_vectors(vm, vb, method, keep, n)[0, 0])
    i, j = pair_index(n)
    cidx = np.zeros((n, n), dtype=np.int64)
    cidx[i, j] = np.arange(len(i))
    cidx[j, i] = np.arange(len(i))
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(n) for _ in range(n_perm)])
    # Unmasked rank/linear scores: prepare once, permuting the prepared vector is exact.
    fast = keep is None and method in ("spearman", "pearson", "cosine")
    pm = unit_rows(prepare(vm, method))[0] if fast else vm[0]
    ub = unit_rows(prepare(vb, method))[0] if fast else None
    null = np.empty(n_perm)
    for a in range(0, n_perm, chunk):
        p = perms[a : a + chunk]
        moved = pm[cidx[p[:, i], p[:, j]]]
        if fast:
            null[a : a + chunk] = moved @ ub
        else:
            null[a : a + chunk] = compare_vectors(moved, vb, method, keep, n)[:, 0]
    tol = 1e-12
    if alternative == "greater":
        hits = null >= obs - tol
    elif alternative == "less":
        hits = null <= obs + tol
    else:
        hits = np.abs(null) >= abs(obs) - tol
    return TestResult(obs, float((1 + hits.sum()) / (1 + n_perm)), null)


def _adjust(p: Any, step_adjust: Any) -> np.ndarray:
    """Apply a step-wise adjustment to the sorted non-NaN p-values; NaNs stay in place."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    v = p[ok]
    if v.size:
        _check_p(v)
        order = np.argsort(v)
        res = np.empty_like(v)
        res[order] = np.minimum(step_adjust(v[order]), 1.0)
        out[ok] = res
    return out


def fdr_bh(p: Any) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (NaNs ignored and kept)."""

    def step_up(v: np.ndarray) -> np.ndarray:
        ranked = v * len(v) / np.arange(1, len(v) + 1)
        return np.minimum.accumulate(ranked[::-1])[::-1]

    return _adjust(p, step_up)


def holm(p: Any) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaNs ignored and kept)."""
    return _adjust(p, lambda v: np.maximum.accumulate(v * (len(v) - np.arange(len(v)))))


def _check_p(v: np.ndarray) -> None:
    if (v < 0).any() or (v > 1).any():
        raise ValueError("p-values must lie in [0, 1]")


CORRECTIONS = {"bh": fdr_bh, "holm": holm}


def adjust_within_families(
    table: Any, p_col: str = "p", family_col: str = "family", method: str = "bh"
) -> Any:
    """Copy of a pandas table with `{p_col}_{method}`: p adjusted within each family's rows."""
    if method not in CORRECTIONS:
        raise ValueError(f"method must be one of {sorted(CORRECTIONS)}, got {method!r}")
    for col in (p_col, family_col):
        if col not in table.columns:
            raise ValueError(f"table has no column {col!r}; columns are {list(table.columns)}")
    out = table.copy()
    out[f"{p_col}_{method}"] = out.groupby(family_col, sort=False)[p_col].transform(
        lambda s: CORRECTIONS[method](s.to_numpy())
    )
    return out

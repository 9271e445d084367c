"""Input handling shared by the RSA modules: tensors to numpy, RDM stacks to condensed vectors.

Every public function funnels its RDM arguments through here so that shape, symmetry and NaN
problems are reported once, with the argument's name, instead of surfacing as wrong numbers.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

# Relative tolerance for calling a square matrix symmetric: float32 pipelines produce ~1e-7.
SYMMETRY_RTOL = 1e-6


def is_tensor(x: Any) -> bool:
    """True for a torch tensor, without importing torch when the caller never did."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def to_numpy(x: Any, name: str, dtype: Any = np.float64) -> np.ndarray:
    """numpy view/copy of an array-like or torch tensor (moved to CPU, detached)."""
    if is_tensor(x):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == object:
        raise TypeError(f"{name} must be a numeric array or tensor, got dtype object")
    return arr if dtype is None else arr.astype(dtype, copy=False)


def n_from_pairs(n_pairs: int, name: str) -> int:
    """Number of conditions n with n(n-1)/2 == n_pairs; clear error otherwise."""
    n = round((1 + math.sqrt(1 + 8 * n_pairs)) / 2)
    if n * (n - 1) // 2 != n_pairs:
        raise ValueError(
            f"{name}: last axis of length {n_pairs} is not a condensed RDM length n(n-1)/2"
        )
    return n


def pair_index(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of each strict-upper-triangle pair, in scipy's squareform order."""
    return np.triu_indices(n, k=1)


def rdm_vectors(
    x: Any, name: str, condensed: bool | None = None
) -> tuple[np.ndarray, int, tuple[int, ...]]:
    """Condensed float64 vectors (k, P) of an RDM stack, plus n and the stack's leading shape.

    Square input (..., n, n) must be symmetric (NaNs included); only the strict upper triangle is
    used, so the diagonal may hold anything. `condensed=None` treats an array whose last two axes
    are equal as square, anything else as condensed (..., n(n-1)/2).
    """
    arr = to_numpy(x, name)
    if arr.ndim == 0:
        raise ValueError(f"{name} must be an RDM (n, n), a condensed vector or a stack of them")
    if condensed is None:
        condensed = not (arr.ndim >= 2 and arr.shape[-1] == arr.shape[-2])
    if condensed:
        n = n_from_pairs(arr.shape[-1], name)
        lead = arr.shape[:-1]
        vecs = arr.reshape(-1, arr.shape[-1])
    else:
        n = arr.shape[-1]
        if arr.ndim < 2 or arr.shape[-2] != n:
            raise ValueError(f"{name} must be square (..., n, n), got shape {arr.shape}")
        if n < 3:
            raise ValueError(f"{name} needs at least 3 conditions, got {n}")
        _check_symmetric(arr, name)
        lead = arr.shape[:-2]
        i, j = pair_index(n)
        vecs = arr[..., i, j].reshape(-1, len(i))
    if n < 3:
        raise ValueError(f"{name} needs at least 3 conditions, got {n}")
    return np.ascontiguousarray(vecs), n, tuple(lead)


def _check_symmetric(arr: np.ndarray, name: str) -> None:
    t = np.swapaxes(arr, -1, -2)
    nan_a, nan_t = np.isnan(arr), np.isnan(t)
    if not np.array_equal(nan_a, nan_t):
        raise ValueError(f"{name} is not symmetric: its NaNs are not mirrored across the diagonal")
    finite = ~nan_a
    if not finite.any():
        return
    diff = np.abs(np.where(finite, arr - t, 0.0)).max()
    scale = max(1.0, float(np.abs(arr[finite]).max()))
    if diff > SYMMETRY_RTOL * scale:
        raise ValueError(f"{name} is not symmetric: max |rdm - rdm.T| = {diff:.3g}")


def pair_mask(mask: Any, n: int, name: str = "mask") -> np.ndarray | None:
    """Boolean condensed pair mask (P,) from a square (n, n) or condensed mask; None stays None."""
    if mask is None:
        return None
    m = to_numpy(mask, name, dtype=None)
    n_pairs = n * (n - 1) // 2
    if m.shape == (n, n):
        if not np.array_equal(m, m.T):
            raise ValueError(f"{name} (n, n) must be symmetric")
        i, j = pair_index(n)
        m = m[i, j]
    elif m.shape != (n_pairs,):
        raise ValueError(
            f"{name} must have shape ({n}, {n}) or ({n_pairs},) for {n} conditions, got {m.shape}"
        )
    if m.dtype != bool:
        if not np.isin(m, (0, 1)).all():
            raise ValueError(f"{name} must be boolean (or 0/1)")
        m = m.astype(bool)
    if m.sum() < 3:
        raise ValueError(f"{name} keeps {int(m.sum())} pairs; at least 3 are needed")
    return m


def check_finite(vecs: np.ndarray, mask: np.ndarray | None, name: str) -> None:
    """Raise unless every pair kept by the mask is finite (NaNs may only sit on dropped pairs)."""
    sel = vecs if mask is None else vecs[:, mask]
    if not np.isfinite(sel).all():
        bad = int((~np.isfinite(sel)).any(axis=0).sum())
        raise ValueError(
            f"{name} has NaN/inf at {bad} pair(s) kept by the comparison; "
            "exclude them with a pair mask"
        )


def paired_vectors(
    a: Any, b: Any, mask: Any, condensed: bool | None
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray | None, tuple, tuple]:
    """Two RDM stacks as checked vectors over the same conditions, with the pair mask:
    (va, vb, n, keep, lead_a, lead_b); NaNs allowed only on pairs the mask drops."""
    va, n, lead_a = rdm_vectors(a, "a", condensed)
    vb, nb, lead_b = rdm_vectors(b, "b", condensed)
    if n != nb:
        raise ValueError(f"a has {n} conditions but b has {nb}")
    keep = pair_mask(mask, n)
    check_finite(va, keep, "a")
    check_finite(vb, keep, "b")
    return va, vb, n, keep, lead_a, lead_b

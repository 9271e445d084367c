"""Representational dissimilarity matrices (RDMs) from pattern matrices (conditions x features).

Every dissimilarity here follows from one Gram matrix X X^T, accumulated over feature blocks in
float64 while each block's product runs in the compute precision (float32 for float32/float16
input, float64 otherwise). Memory therefore stays bounded by one block, whatever the feature
count, which is what lets a 720 x 400,000 conv map be reduced to an RDM. Centring is chosen so
that float32 products do not lose the signal to cancellation:

- correlation: each row is shifted by the mean of its first block before the product, and the
  exact row centring is applied to the Gram at the end (a row shift changes nothing after it);
- Euclidean and crossnobis: each block's columns are centred, which leaves distances unchanged;
- cosine: no centring (it would change the quantity).

Method names: "correlation" (1 - Pearson r), "cosine" (1 - cosine similarity), "euclidean"
(plain distance, as scipy's pdist), "sqeuclidean" (squared distance) and "sqeuclidean_mean"
(squared distance / n_features, which rsatoolbox calls "euclidean").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from snnrsa.rsa._arrays import is_tensor, to_numpy

RDM_METHODS = ("correlation", "cosine", "euclidean", "sqeuclidean", "sqeuclidean_mean")
_CENTRING = {
    "correlation": "rows",
    "cosine": "none",
    "euclidean": "columns",
    "sqeuclidean": "columns",
    "sqeuclidean_mean": "columns",
    "crossnobis": "columns",
}
DEFAULT_BLOCK_FEATURES = 8192


def _compute_dtype(dtype: Any, block_dtype: Any) -> np.dtype:
    if dtype is not None:
        dt = np.dtype(dtype)
        if dt not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dt}")
        return dt
    low_precision = str(block_dtype).replace("torch.", "") in ("float32", "float16", "bfloat16")
    return np.dtype(np.float32 if low_precision else np.float64)


class GramAccumulator:
    """Accumulates the (centred) Gram matrix of X (n, F) from feature blocks X[:, a:b].

    Feed blocks with `update` (numpy arrays or torch tensors on any device, shape (n, ...);
    trailing axes are flattened) in any order and of any width; read the result with `rdm()` or
    `gram()`. Blocks wider than `block_features` are split so that temporaries stay bounded.
    """

    def __init__(
        self,
        method: str = "correlation",
        dtype: Any = None,
        block_features: int = DEFAULT_BLOCK_FEATURES,
    ) -> None:
        if method not in _CENTRING:
            raise ValueError(f"method must be one of {sorted(_CENTRING)}, got {method!r}")
        if block_features < 1:
            raise ValueError(f"block_features must be >= 1, got {block_features}")
        self.method = method
        self.block_features = int(block_features)
        self._dtype_arg = dtype
        self._dtype: np.dtype | None = None
        self._centring = _CENTRING[method]
        self._g: np.ndarray | None = None
        self._s: np.ndarray | None = None
        self._shift: np.ndarray | None = None
        self._shift_t: Any = None
        self.n_features = 0

    def update(self, block: Any) -> None:
        """Add the contribution of one feature block (n, f) or (n, ...)."""
        tensor = is_tensor(block)
        if not tensor:
            block = np.asarray(block)
            if not (np.issubdtype(block.dtype, np.number) or block.dtype == bool):
                raise TypeError(f"block must be numeric, got dtype {block.dtype}")
        if block.ndim < 1:
            raise ValueError("block must have a condition axis first: (n, features...)")
        n = block.shape[0]
        block = block.reshape(n, -1)
        if self._g is None:
            self._dtype = _compute_dtype(self._dtype_arg, block.dtype)
            self._g = np.zeros((n, n))
            self._s = np.zeros(n)
        elif n != self._g.shape[0]:
            raise ValueError(
                f"block has {n} conditions (rows), earlier blocks had {self._g.shape[0]}"
            )
        for a in range(0, block.shape[1], self.block_features):
            part = block[:, a : a + self.block_features]
            if tensor:
                self._update_torch(part)
            else:
                self._update_numpy(part)

    def _update_numpy(self, b: np.ndarray) -> None:
        b = b.astype(self._dtype, copy=False)
        if self._centring == "rows":
            if self._shift is None:
                self._shift = b.mean(axis=1, dtype=np.float64)
            b = b - self._shift.astype(self._dtype)[:, None]
            self._s += b.sum(axis=1, dtype=np.float64)
        elif self._centring == "columns":
            b = b - b.mean(axis=0, dtype=np.float64).astype(self._dtype)[None, :]
        self._g += b @ b.T
        self.n_features += b.shape[1]

    def _update_torch(self, b: Any) -> None:
        import torch

        tdt = torch.float32 if self._dtype == np.float32 else torch.float64
        b = b.detach().to(tdt)
        if self._centring == "rows":
            if self._shift_t is None:
                self._shift_t = b.mean(dim=1, dtype=torch.float64)
                self._shift = self._shift_t.cpu().numpy()
            b = b - self._shift_t.to(device=b.device, dtype=tdt)[:, None]
            self._s += b.sum(dim=1, dtype=torch.float64).cpu().numpy()
        elif self._centring == "columns":
            b = b - b.mean(dim=0, dtype=torch.float64).to(tdt)[None, :]
        self._g += (b @ b.T).to(torch.float64).cpu().numpy()
        self.n_features += b.shape[1]

    def gram(self) -> np.ndarray:
        """The float64 Gram matrix: row-centred (correlation), column-centred, or raw (cosine)."""
        if self._g is None or self.n_features == 0:
            raise ValueError("no feature blocks were accumulated")
        g = self._g
        if not np.isfinite(g).all() or not np.isfinite(self._s).all():
            rows = np.flatnonzero(~np.isfinite(np.diag(g)))[:5].tolist()
            raise ValueError(f"patterns contain NaN or infinite values (rows {rows})")
        if self._centring == "rows":
            g = g - np.outer(self._s, self._s) / self.n_features
        return (g + g.T) / 2

    def rdm(self) -> np.ndarray:
        """The (n, n) float64 RDM for this accumulator's method."""
        if self.method == "crossnobis":
            raise ValueError("crossnobis needs condition and session labels: use crossnobis_rdm")
        return rdm_from_gram(self.gram(), self.method, self.n_features)


def rdm_from_gram(gram: np.ndarray, method: str, n_features: int) -> np.ndarray:
    """RDM from a Gram matrix centred as `GramAccumulator` does for `method`."""
    if method in ("correlation", "cosine"):
        norm = np.sqrt(np.clip(np.diag(gram), 0.0, None))
        if np.any(norm == 0):
            bad = np.flatnonzero(norm == 0)[:5].tolist()
            what = "constant" if method == "correlation" else "all-zero"
            raise ValueError(f"{what} pattern(s) at rows {bad}: {method} distance undefined")
        rdm = 1.0 - gram / np.outer(norm, norm)
    elif method in ("euclidean", "sqeuclidean", "sqeuclidean_mean"):
        d = np.diag(gram)
        rdm = np.clip(d[:, None] + d[None, :] - 2.0 * gram, 0.0, None)
        if method == "euclidean":
            rdm = np.sqrt(rdm)
        elif method == "sqeuclidean_mean":
            rdm = rdm / n_features
    else:
        raise ValueError(f"method must be one of {RDM_METHODS}, got {method!r}")
    np.fill_diagonal(rdm, 0.0)
    return (rdm + rdm.T) / 2


def compute_rdm(
    patterns: Any,
    method: str = "correlation",
    *,
    dtype: Any = None,
    block_features: int = DEFAULT_BLOCK_FEATURES,
) -> np.ndarray:
    """RDM (n, n) float64 of patterns (n, features...) given as numpy array or torch tensor."""
    if patterns is None or (not is_tensor(patterns) and np.ndim(patterns) < 2):
        raise ValueError(
            f"patterns must be at least 2-D (conditions x features), got {np.shape(patterns)}"
        )
    acc = GramAccumulator(method, dtype=dtype, block_features=block_features)
    acc.update(patterns)
    return acc.rdm()


def streamed_rdm(
    blocks: Iterable[Any],
    method: str = "correlation",
    *,
    dtype: Any = None,
    block_features: int = DEFAULT_BLOCK_FEATURES,
) -> np.ndarray:
    """RDM from an iterable of feature blocks (n, f_k), e.g. layers or channel groups."""
    acc = GramAccumulator(method, dtype=dtype, block_features=block_features)
    for block in blocks:
        acc.update(block)
    return acc.rdm()


def correlation_rdm(patterns: Any, *, dtype: Any = None) -> np.ndarray:
    """1 - Pearson r between rows, via one centred, normalised Gram matrix (float64 result)."""
    return compute_rdm(patterns, "correlation", dtype=dtype)


def cosine_rdm(patterns: Any, *, dtype: Any = None) -> np.ndarray:
    """1 - cosine similarity between rows."""
    return compute_rdm(patterns, "cosine", dtype=dtype)


def euclidean_rdm(
    patterns: Any, *, squared: bool = False, per_feature: bool = False, dtype: Any = None
) -> np.ndarray:
    """Euclidean distance; `squared` and `per_feature` (divide by n_features) give rsatoolbox's."""
    if per_feature and not squared:
        raise ValueError("per_feature=True is defined for squared distances only")
    method = "sqeuclidean_mean" if per_feature else ("sqeuclidean" if squared else "euclidean")
    return compute_rdm(patterns, method, dtype=dtype)


def crossnobis_rdm(
    patterns: Any,
    conditions: Any,
    sessions: Any,
    *,
    noise: Any = None,
    dtype: Any = None,
    block_features: int = DEFAULT_BLOCK_FEATURES,
) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-session-out cross-validated squared Mahalanobis distance (rsatoolbox's crossnobis).

    patterns (n_obs, features...) are single measurements labelled by `conditions` and `sessions`
    (n_obs,). For each session, distances between that session's condition means and the pooled
    means of all other sessions are combined as d_ij = k_ii + k_jj - k_ij - k_ji (k the
    cross-session kernel), divided by n_features and averaged over sessions. Noise in one session
    does not bias the estimate, so its expectation is the true distance (it can go negative).
    `noise` is an optional (features x features) precision matrix (identity when None; then the
    kernel is streamed through a Gram accumulator). Returns (rdm, condition labels in sorted order).
    """
    n_obs = patterns.shape[0] if hasattr(patterns, "shape") else len(patterns)
    labels, cidx, folds, fidx = _session_labels(conditions, sessions, n_obs)
    if noise is None:
        acc = GramAccumulator("crossnobis", dtype=dtype, block_features=block_features)
        acc.update(patterns)
        k_obs, n_features = acc.gram(), acc.n_features
    else:
        k_obs, n_features = _precision_kernel(patterns, noise, n_obs)
    rdm = np.zeros((len(labels), len(labels)))
    for f in range(len(folds)):
        test = (fidx == f).astype(float)
        a_test = np.zeros((len(labels), n_obs))
        a_test[cidx, np.arange(n_obs)] = test
        a_train = np.zeros((len(labels), n_obs))
        a_train[cidx, np.arange(n_obs)] = 1.0 - test
        a_test /= a_test.sum(axis=1, keepdims=True)
        a_train /= a_train.sum(axis=1, keepdims=True)
        k = a_train @ k_obs @ a_test.T
        d = np.diag(k)
        rdm += d[:, None] + d[None, :] - k - k.T
    rdm /= len(folds) * n_features
    np.fill_diagonal(rdm, 0.0)
    return (rdm + rdm.T) / 2, labels


def _session_labels(conditions: Any, sessions: Any, n_obs: int):
    """Sorted condition labels and sessions with each row's index into them; every condition must
    be observed in each of at least two sessions."""
    cond = np.asarray(to_numpy(conditions, "conditions", dtype=None))
    sess = np.asarray(to_numpy(sessions, "sessions", dtype=None))
    for name, lab in (("conditions", cond), ("sessions", sess)):
        if lab.shape != (n_obs,):
            raise ValueError(
                f"{name} must have shape ({n_obs},) to label each row, got {lab.shape}"
            )
    labels, cidx = np.unique(cond, return_inverse=True)
    folds, fidx = np.unique(sess, return_inverse=True)
    if len(folds) < 2:
        raise ValueError("sessions must contain at least 2 distinct values for cross-validation")
    counts = np.zeros((len(folds), len(labels)))
    np.add.at(counts, (fidx, cidx), 1)
    if (counts == 0).any():
        f, c = np.argwhere(counts == 0)[0]
        raise ValueError(f"condition {labels[c]!r} has no observation in session {folds[f]!r}")
    return labels, cidx, folds, fidx


def _precision_kernel(patterns: Any, noise: Any, n_obs: int) -> tuple[np.ndarray, int]:
    """The (n_obs x n_obs) kernel of centred patterns under the precision matrix ``noise``."""
    x = to_numpy(patterns, "patterns").reshape(n_obs, -1)
    prec = to_numpy(noise, "noise")
    if prec.shape != (x.shape[1], x.shape[1]):
        raise ValueError(f"noise must be ({x.shape[1]}, {x.shape[1]}), got {prec.shape}")
    if not (np.isfinite(x).all() and np.isfinite(prec).all()):
        raise ValueError("patterns or noise contain NaN or infinite values")
    x = x - x.mean(axis=0)
    return x @ prec @ x.T, x.shape[1]

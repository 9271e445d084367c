"""Stimulus bootstrap of model-brain scores and of noise ceilings, with paired resamples.

Stimuli are resampled with replacement; pairs of a stimulus with its own copy are dropped and the
pair mask is carried along (a resampled pair is kept when the original pair is), exactly as
rsatoolbox's `bootstrap_sample_pattern` + `subsample_pattern` do. `bootstrap_indices(n, B, seed)`
draws the same resamples as rsatoolbox after `np.random.seed(seed)`, and passing the same
`indices` (or seed) to every call shares the resamples across conditions, so differences between
conditions get paired confidence intervals. Resamples are never materialised: each becomes
integer pair weights (see `_wrank`), which is what makes 1,000 resamples of 720 stimuli cheap.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from snnrsa.rsa._arrays import check_finite, pair_index, pair_mask, paired_vectors, rdm_vectors
from snnrsa.rsa._wrank import present_pairs, rank_keys, weighted_ranks
from snnrsa.rsa.compare import canonical_method, convention_vectors

BOOT_METHODS = ("spearman", "pearson", "cosine")


def bootstrap_indices(n_stimuli: int, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """(n_boot, n_stimuli) resampled stimulus indices; rsatoolbox's draws after np.random.seed."""
    if n_stimuli < 3 or n_boot < 1:
        raise ValueError(f"need n_stimuli >= 3 and n_boot >= 1, got {n_stimuli}, {n_boot}")
    rs = np.random.RandomState(seed)
    return np.stack([rs.randint(0, n_stimuli, size=n_stimuli) for _ in range(n_boot)])


def _resample_setup(
    n: int, indices: Any, n_boot: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    idx = bootstrap_indices(n, n_boot, seed) if indices is None else np.asarray(indices)
    if idx.ndim != 2 or idx.shape[1] != n or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"indices must be integer (n_boot, {n}), got {idx.dtype} {idx.shape}")
    if idx.min() < 0 or idx.max() >= n:
        raise ValueError(f"indices must lie in [0, {n})")
    counts = np.stack([np.bincount(row, minlength=n) for row in idx])
    iu, ju = pair_index(n)
    return counts, iu, ju


def _method(method: str) -> str:
    m = canonical_method(method)
    if m not in BOOT_METHODS:
        raise ValueError(f"bootstrap supports methods {BOOT_METHODS}, got {method!r}")
    return m


def bootstrap_compare(
    a: Any,
    b: Any,
    method: str = "spearman",
    mask: Any = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    indices: Any = None,
    condensed: bool | None = None,
) -> np.ndarray:
    """Scores of every RDM in `a` against every RDM in `b` on each resample: (B,) + a + b leads.

    Resamples with fewer than 3 distinct stimuli, or where a vector has no variance, give NaN.
    """
    method = _method(method)
    va, vb, n, keep, lead_a, lead_b = paired_vectors(a, b, mask, condensed)
    counts, iu, ju = _resample_setup(n, indices, n_boot, seed)
    out = np.full((len(counts), len(va), len(vb)), np.nan)
    if method == "spearman":
        allv = np.concatenate([va, vb])
        keys, ties = rank_keys(allv)
        for s, c in enumerate(counts):
            if np.count_nonzero(c) < 3:
                continue
            pidx, w = present_pairs(c, iu, ju, keep)
            out[s] = _spearman_one(keys[:, pidx], ties, w, len(va))
    else:
        for s, c in enumerate(counts):
            if np.count_nonzero(c) < 3:
                continue
            pidx, w = present_pairs(c, iu, ju, keep)
            out[s] = _weighted_corr(va[:, pidx], vb[:, pidx], w * 1.0, centre=method == "pearson")
    return out.reshape((len(counts),) + lead_a + lead_b)


def _ranks_and_variances(
    keys: np.ndarray, ties: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shifted weighted ranks (rows: centred rank + h, see `weighted_ranks`), h, variances."""
    n_tot = float(w.sum())
    base = n_tot**3 - n_tot
    wf = w.astype(np.float64)
    shared = float(np.sum(wf**3 - wf))
    ranks = np.empty((len(keys), len(w)))
    var = np.empty(len(keys))
    for r in range(len(keys)):
        excess = weighted_ranks(keys[r], w, bool(ties[r]), ranks[r])
        var[r] = (base - shared - excess) / 12.0
    return ranks, (n_tot + wf) / 2.0, var


def _spearman_one(keys: np.ndarray, ties: np.ndarray, w: np.ndarray, n_a: int) -> np.ndarray:
    ranks, h, var = _ranks_and_variances(keys, ties, w)
    # sum w (x - h)(y - h) for all pairs at once: one product with h appended to both sides
    left = np.vstack([ranks[:n_a], h]) * w
    t = left @ np.vstack([ranks[n_a:], h]).T
    num = t[:-1, :-1] - t[-1:, :-1] - t[:-1, -1:] + t[-1, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt(np.where(var > 0, var, np.nan))
        return num / np.outer(sd[:n_a], sd[n_a:])


def _matvec(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x @ w without BLAS: threaded gemv/dot on a busy machine is 30x slower than this loop."""
    return np.einsum("ij,j->i", x, w)


def _weighted_corr(x: np.ndarray, y: np.ndarray, w: np.ndarray, centre: bool) -> np.ndarray:
    """Weighted Pearson (centre) or cosine between rows of x and y."""
    if centre:
        sw = w.sum()
        x = x - (_matvec(x, w) / sw)[:, None]
        y = y - (_matvec(y, w) / sw)[:, None]
    num = (x * w) @ y.T
    nx = np.sqrt(_matvec(x * x, w))
    ny = np.sqrt(_matvec(y * y, w))
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / np.outer(np.where(nx > 0, nx, np.nan), np.where(ny > 0, ny, np.nan))


def bootstrap_score(
    models: Any,
    subject_rdms: Any,
    method: str = "spearman",
    mask: Any = None,
    *,
    convention: str = "per_subject",
    n_boot: int = 1000,
    seed: int = 0,
    indices: Any = None,
    condensed: bool | None = None,
) -> np.ndarray:
    """`compare.score` on each resample: (B,) + models_lead + brains_lead[:-1]."""
    va, vb = convention_vectors(models, subject_rdms, convention, condensed)
    out = bootstrap_compare(
        va,
        vb,
        method,
        mask,
        n_boot=n_boot,
        seed=seed,
        indices=indices,
        condensed=True,
    )
    return out if convention == "mean_rdm" else out.mean(axis=-1)


def bootstrap_noise_ceiling(
    subject_rdms: Any,
    method: str = "spearman",
    mask: Any = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    indices: Any = None,
    condensed: bool | None = None,
) -> np.ndarray:
    """(B, 2) leave-one-subject-out (lower, upper) ceilings on each stimulus resample.

    Each row equals rsatoolbox's `boot_noise_ceiling` on the resampled RDMs (what its
    `eval_bootstrap_pattern` computes per sample). subject_rdms: (subjects, n, n), >= 2 subjects.
    """
    method = _method(method)
    vs, n, lead = rdm_vectors(subject_rdms, "subject_rdms", condensed)
    if len(lead) != 1 or len(vs) < 2:
        raise ValueError(f"subject_rdms must be (subjects >= 2, n, n), got leading shape {lead}")
    keep = pair_mask(mask, n)
    check_finite(vs, keep, "subject_rdms")
    counts, iu, ju = _resample_setup(n, indices, n_boot, seed)
    keys, ties = rank_keys(vs) if method == "spearman" else (None, None)
    out = np.full((len(counts), 2), np.nan)
    for s, c in enumerate(counts):
        if np.count_nonzero(c) < 3:
            continue
        pidx, w = present_pairs(c, iu, ju, keep)
        if method == "spearman":
            out[s] = _ceiling_spearman(keys[:, pidx], ties, w)
        else:
            out[s] = _ceiling_linear(vs[:, pidx], w * 1.0, method)
    return out


def _ceiling_spearman(keys: np.ndarray, ties: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    n_subj = len(keys)
    ranks, h, var = _ranks_and_variances(keys, ties, w)
    ranks -= h
    n_tot = float(w.sum())
    base = n_tot**3 - n_tot
    wf = w.astype(np.float64)
    shared = float(np.sum(wf**3 - wf))
    # 2 * centred mid-rank is an integer, so pooled ranks are ordered exactly by integer sums.
    twice = np.rint(2.0 * ranks).astype(np.int64)
    total = twice.sum(axis=0)
    pooled_rank = np.empty(len(w))
    lower, upper = [], []
    for k in range(n_subj + 1):
        pooled = total - twice[k] if k < n_subj else total
        excess = weighted_ranks(pooled - pooled.min(), w, True, pooled_rank)
        pooled_rank -= h
        pvar = (base - shared - excess) / 12.0
        targets = [k] if k < n_subj else range(n_subj)
        pw = pooled_rank * wf
        rho = [_matvec(ranks[t : t + 1], pw)[0] / np.sqrt(pvar * var[t]) for t in targets]
        (lower if k < n_subj else upper).extend(rho)
    return float(np.mean(lower)), float(np.mean(upper))


def _ceiling_linear(v: np.ndarray, w: np.ndarray, method: str) -> tuple[float, float]:
    sw = w.sum()
    if method == "pearson":
        mean = (_matvec(v, w) / sw)[:, None]
        z = (v - mean) / np.sqrt(_matvec((v - mean) ** 2, w) / sw)[:, None]
    else:
        z = v / np.sqrt(_matvec(v * v, w) / sw)[:, None]
    n_subj = len(v)
    total = z.sum(axis=0)
    lower = [
        _weighted_corr(((total - z[s]) / (n_subj - 1))[None], v[s][None], w, method == "pearson")
        for s in range(n_subj)
    ]
    upper = _weighted_corr((total / n_subj)[None], v, w, method == "pearson")
    return float(np.mean(lower)), float(np.mean(upper))


def percentile_ci(samples: Any, level: float = 0.95, axis: int = 0) -> np.ndarray:
    """Percentile interval (2, ...) of bootstrap samples along `axis`, ignoring NaN resamples."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    x = np.asarray(samples, dtype=float)
    alpha = (1 - level) / 2
    return np.nanpercentile(x, [100 * alpha, 100 * (1 - alpha)], axis=axis)


def bootstrap_p(samples: Any, null: float = 0.0, axis: int = 0) -> np.ndarray:
    """Two-sided bootstrap p of `null`: 2 * the smaller tail share, (count + 1) / (B + 1), <= 1."""
    x = np.asarray(samples, dtype=float)
    valid = np.sum(~np.isnan(x), axis=axis)
    below = np.sum(x <= null, axis=axis)
    above = np.sum(x >= null, axis=axis)
    p = 2 * (np.minimum(below, above) + 1) / (valid + 1)
    return np.minimum(p, 1.0)

"""Stimulus bootstrap of model-brain scores and of noise ceilings, with paired resamples.

Stimuli are resampled with replacement; pairs of a stimulus with its own copy are dropped and the
pair mask is carried along (a resampled pair is kept when the original pair is), exactly as
rsatoolbox's `bootstrap_sample_pattern` + `subsample_pattern` do. `bootstrap_indices(n, B, seed)`
draws the same resamples as rsatoolbox after `np.random.seed(seed)`, and passing the same
`indices` (or seed) to every call shares the resamples across conditions, so differences between
conditions get paired confidence intervals. Resamples are never materialised: each becomes
integer pair weights (see `_wrank`): every RDM is sorted once, and a resample costs one compiled
pass per RDM in that fixed order (no sort), which is what makes 1,000 resamples of 720 stimuli
cheap on any x86-64 machine.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from snnrsa.rsa._arrays import check_finite, pair_index, pair_mask, paired_vectors, rdm_vectors
from snnrsa.rsa._wrank import (
    RankPlan,
    kept_pairs,
    pooled_rank_products,
    rank_plan,
    resample_ranks,
    weighted_cross,
)
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
    n_jobs: int | None = None,
) -> np.ndarray:
    """Scores of every RDM in `a` against every RDM in `b` on each resample: (B,) + a + b leads.

    Resamples with fewer than 3 distinct stimuli, or where a vector has no variance, give NaN.
    `n_jobs` threads share the resamples (None: every usable core); results do not depend on it.
    """
    method = _method(method)
    va, vb, n, keep, lead_a, lead_b = paired_vectors(a, b, mask, condensed)
    counts, iu, ju = _resample_setup(n, indices, n_boot, seed)
    va, vb, iu, ju = _kept_by_mask(keep, iu, ju, va, vb)
    if method == "spearman":
        plan = rank_plan(np.concatenate([va, vb]), iu, ju, n)

        def one(c: np.ndarray) -> np.ndarray:
            return _spearman_one(plan, c, *kept_pairs(c, iu, ju), len(va))

    else:

        def one(c: np.ndarray) -> np.ndarray:
            pidx, wp, _, _ = kept_pairs(c, iu, ju)
            return _weighted_corr(va[:, pidx], vb[:, pidx], wp * 1.0, method == "pearson")

    out = _map_resamples(one, counts, (len(va), len(vb)), n_jobs)
    return out.reshape((len(counts),) + lead_a + lead_b)


def _kept_by_mask(keep: np.ndarray | None, iu: np.ndarray, ju: np.ndarray, *vecs: np.ndarray) -> list:
    """Pair index and vectors restricted to the pairs the mask keeps (all of them for None)."""
    if keep is None:
        return [*vecs, iu, ju]
    return [v[:, keep] for v in vecs] + [iu[keep], ju[keep]]


def _n_jobs(n_jobs: int | None, n_tasks: int) -> int:
    if n_jobs is None:
        n_jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if n_jobs < 1:
        raise ValueError(f"n_jobs must be >= 1, got {n_jobs}")
    return max(1, min(n_jobs, n_tasks))


def _map_resamples(
    one: Callable[[np.ndarray], Any], counts: np.ndarray, shape: tuple[int, ...], n_jobs: int | None
) -> np.ndarray:
    """out[s] = one(counts[s]) for every resample with >= 3 distinct stimuli, else NaN.

    Threads take contiguous blocks of resamples; the compiled passes release the GIL.
    """
    out = np.full((len(counts),) + shape, np.nan)

    def block(rows: np.ndarray) -> None:
        for s in rows:
            if np.count_nonzero(counts[s]) >= 3:
                out[s] = one(counts[s])

    jobs = _n_jobs(n_jobs, len(counts))
    if jobs == 1:
        block(np.arange(len(counts)))
    else:
        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(block, np.array_split(np.arange(len(counts)), jobs)))
    return out


def _rank_variance(n_tot: int, tiesum: Any) -> Any:
    """sum(w * (mid-rank - mean)^2) from the tie sums the rank passes return (float64: N^3 ~ 1e16)."""
    return (float(n_tot) ** 3 - n_tot - np.asarray(tiesum)) / 12.0


def _kept_ranks(
    plan: RankPlan, counts: np.ndarray, pidx: np.ndarray, n_tot: int, cubes: float, out: np.ndarray
) -> np.ndarray:
    """Doubled centred mid-ranks (integers) of the pairs a resample keeps into out (rows x
    kept pairs); returns their variances. Only the kept pairs (~40 % of all) are ranked, so
    every later product runs over them only."""
    val = np.empty(plan.groups.shape[1], dtype=plan.rank_dtype)
    tiesum = np.empty(len(plan.groups))
    resample_ranks(
        plan.si, plan.sj, plan.groups, plan.tie_rows, plan.sorted_groups,
        counts, pidx, n_tot, cubes, val, out, tiesum,
    )  # fmt: skip
    return _rank_variance(n_tot, tiesum)


def _spearman_one(
    plan: RankPlan, counts: np.ndarray, pidx: np.ndarray, wp: np.ndarray, n_tot: int, cubes: float, n_a: int
) -> np.ndarray:
    """Spearman of rows [:n_a] against rows [n_a:] on one resample."""
    ranks = np.empty((len(plan.groups), len(pidx)), dtype=plan.rank_dtype)
    var = _kept_ranks(plan, counts, pidx, n_tot, cubes, ranks)
    num = np.empty((n_a, len(ranks) - n_a))
    weighted_cross(ranks[:n_a], ranks[n_a:], wp, num)
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt(np.where(var > 0, var, np.nan))
        return num / 4.0 / np.outer(sd[:n_a], sd[n_a:])


def _matvec(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x @ w without BLAS: threaded gemv/dot is far slower than this loop on a busy machine, and
    a fixed summation order keeps the numbers independent of the BLAS build."""
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
    n_jobs: int | None = None,
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
        n_jobs=n_jobs,
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
    n_jobs: int | None = None,
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
    vs, iu, ju = _kept_by_mask(keep, iu, ju, vs)
    plan = rank_plan(vs, iu, ju, n) if method == "spearman" else None

    def one(c: np.ndarray) -> tuple[float, float]:
        pidx, wp, n_tot, cubes = kept_pairs(c, iu, ju)
        if plan is None:
            return _ceiling_linear(vs[:, pidx], wp * 1.0, method)
        return _ceiling_spearman(plan, c, pidx, wp, n_tot, cubes)

    return _map_resamples(one, counts, (2,), n_jobs)


def _ceiling_spearman(
    plan: RankPlan, counts: np.ndarray, pidx: np.ndarray, wp: np.ndarray, n_tot: int, cubes: float
) -> tuple[float, float]:
    """rsatoolbox's Spearman LOSO bounds: pool (average) the other subjects' ranks, rank again."""
    n_subj, m = len(plan.groups), len(pidx)
    key_bits = int(2 * n_subj * n_tot).bit_length()
    if key_bits > 62:
        raise ValueError(f"too many pairs for exact pooled ranks ({m} pairs, N = {n_tot})")
    # per pair: weight, then the subjects' doubled centred ranks (integers, so pooled ranks
    # are ordered exactly by integer sums); one row per pair for the random reads after sorting
    table = np.empty((m, n_subj + 1), dtype=plan.rank_dtype)
    table[:, 0] = wp
    var = _kept_ranks(plan, counts, pidx, n_tot, cubes, table[:, 1:].T)
    keys = (np.empty(m, dtype=np.int64), np.empty(m, dtype=np.int64))
    recs = (np.empty_like(table), np.empty_like(table))
    num = np.empty(n_subj)
    lower, upper = [], []
    for k in [*range(n_subj), -1]:
        ties = pooled_rank_products(table, k, n_subj * n_tot, key_bits, n_tot, *keys, *recs, num)
        pvar = _rank_variance(n_tot, ties)
        rho = num / 4.0 / np.sqrt(pvar * var)
        if k >= 0:
            lower.append(rho[k])
        else:
            upper.extend(rho)
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

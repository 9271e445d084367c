"""Weighted mid-ranks: Spearman on a stimulus-bootstrap resample without building the resample.

A resample of stimuli with counts c repeats pair (i, j) c_i * c_j times and drops self-pairs, so
the resampled RDM vector is the original pairs with integer weights w = c_i c_j (times the pair
mask). Ranking the expanded vector with average ties equals giving each kept pair (w > 0) the
weighted mid-rank (weight of smaller pairs) + (weight of its tie group + 1) / 2, and the order of
the pairs is the order of the original values, fixed across resamples. So each RDM is ranked once
(`tie_groups`); a resample sorts its kept pairs' integer group ids (`gather_keys`, numpy's SIMD
sort) and one compiled pass (`midranks`, numba) turns the order into exact doubled mid-ranks.
Results equal rsatoolbox's rankdata on the expanded resample.
"""

from __future__ import annotations

import numba
import numpy as np


def index_bits(m: int) -> int:
    """Bits that hold an item index below m in a packed (key << bits | index) int64."""
    return max(1, int(m - 1).bit_length())


@numba.njit(nogil=True, cache=True)
def midranks(packed: np.ndarray, shift: int, ties: bool, w: np.ndarray, n_tot: int, out: np.ndarray) -> float:
    """Doubled centred weighted mid-ranks of the items listed in sorted `packed`, into `out`.

    Item i gets 2 * (mid-rank - (N + 1) / 2), N = sum(w): an exact integer whatever the weights.
    Equal keys (packed >> shift) form tie groups; with `ties=False` keys are taken as distinct.
    Items with w = 0 get a value but no weight. Returns the tie sum T = sum over tie groups (of
    the expanded vector) of G^3 - G, so sum(w (rank - mean)^2) = (N^3 - N - T) / 12.
    """
    m = packed.shape[0]
    mask = (np.int64(1) << shift) - 1
    before = np.int64(0)
    tiesum = np.int64(0)
    if not ties:
        for k in range(m):
            i = packed[k] & mask
            wk = np.int64(w[i])
            out[i] = 2 * before + wk - n_tot
            before += wk
            tiesum += wk * wk * wk - wk
        return float(tiesum)
    k = 0
    while k < m:
        key = packed[k] >> shift
        e = k + 1
        g = np.int64(w[packed[k] & mask])
        while e < m and packed[e] >> shift == key:
            g += w[packed[e] & mask]
            e += 1
        value = 2 * before + g - n_tot
        for q in range(k, e):
            out[packed[q] & mask] = value
        tiesum += g * g * g - g
        before += g
        k = e
    return float(tiesum)


@numba.njit(nogil=True, cache=True)
def pair_weights(counts: np.ndarray, iu: np.ndarray, ju: np.ndarray, keep: np.ndarray, w: np.ndarray) -> None:
    """Integer weights c_i c_j of every pair in a resample into w (0 where `keep` is False)."""
    for p in range(iu.shape[0]):
        w[p] = counts[iu[p]] * counts[ju[p]] if keep[p] else 0


def tie_groups(vecs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each item's dense rank (tie-group id) in its row, equal values sharing one; and per row
    whether it has any tie. int32 ids halve the memory the per-resample gathers stream."""
    order = np.argsort(vecs, axis=1, kind="stable")
    srt = np.take_along_axis(vecs, order, axis=1)
    new = np.ones_like(srt, dtype=bool)
    new[:, 1:] = srt[:, 1:] != srt[:, :-1]
    dtype = np.int32 if vecs.shape[1] < 2**31 else np.int64
    groups = np.empty(vecs.shape, dtype=dtype)
    np.put_along_axis(groups, order, np.cumsum(new, axis=1, dtype=dtype) - 1, axis=1)
    return groups, ~new.all(axis=1)


@numba.njit(nogil=True, cache=True)
def gather_keys(groups: np.ndarray, pidx: np.ndarray, shift: int) -> np.ndarray:
    """Packed sort keys (group id << shift | j) of the items pidx[j]."""
    packed = np.empty(pidx.shape[0], dtype=np.int64)
    for j in range(pidx.shape[0]):
        packed[j] = (np.int64(groups[pidx[j]]) << shift) | j
    return packed


@numba.njit(nogil=True, cache=True)
def pooled_keys(ranks: np.ndarray, leave: int, shift: int, offset: int) -> np.ndarray:
    """Packed sort keys of the summed integer-valued rank rows, row `leave` left out (-1: none).

    The sum of doubled centred ranks orders pairs like the mean of the rows, exactly;
    `offset` (rows * N bounds |sum|) makes it non-negative.
    """
    rows, m = ranks.shape
    packed = np.empty(m, dtype=np.int64)
    for p in range(m):
        v = np.int64(offset)
        for r in range(rows):
            if r != leave:
                v += np.int64(ranks[r, p])
        packed[p] = (v << shift) | p
    return packed

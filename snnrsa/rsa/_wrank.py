"""Weighted mid-ranks: Spearman on a stimulus-bootstrap resample without building the resample.

A resample of stimuli with counts c repeats pair (i, j) c_i * c_j times and drops self-pairs, so
the resampled RDM vector is the original pairs with integer weights w = c_i c_j. Ranking the
expanded vector with average ties equals giving each kept pair (w > 0) the weighted mid-rank
(weight of smaller pairs) + (weight of its tie group + 1) / 2, and the order of the pairs is the
order of the original values, fixed across resamples. So each RDM is sorted once (`RankPlan`:
the stimuli of its pairs in ascending order), and a resample ranks an RDM with no sort at all:
one pass in that order reads the weights from the counts (720 numbers, cache-resident) and
accumulates them (`resample_ranks`). The pooled ranks of the LOSO ceiling do change order per
resample; they are integers in a known range, sorted by a compiled LSD radix sort. Only scalar
integer loops and fixed-order sums run per resample, so the cost does not hinge on which SIMD
sort numpy dispatches on a machine, and the numbers do not depend on the machine or on BLAS.
Results equal rsatoolbox's rankdata on the expanded resample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

BLOCK = 2048  # pairs per block of the weighted products (the block's operands stay in L1/L2)
RADIX_BITS = 11  # most bits per radix-sort digit


@dataclass(frozen=True)
class RankPlan:
    """Each RDM row sorted once: what every resample's ranking pass reads.

    si, sj: stimuli of the row's pairs in ascending order of dissimilarity (int16 below 32,768
    stimuli, so one pass streams 4 bytes per pair); groups: each pair's tie group (dense rank,
    pair order); tie_rows / sorted_groups: for rows with ties only, the group ids in sorted
    order (tie_rows[r] indexes sorted_groups, -1 for rows without ties); rank_dtype: int32 while
    doubled ranks fit (n < 65,536 stimuli).
    """

    si: np.ndarray
    sj: np.ndarray
    groups: np.ndarray
    tie_rows: np.ndarray
    sorted_groups: np.ndarray
    rank_dtype: type


def rank_plan(vecs: np.ndarray, iu: np.ndarray, ju: np.ndarray, n: int) -> RankPlan:
    """Sort each row of vecs (rows x pairs; pair p joins stimuli iu[p], ju[p]) once."""
    order = np.argsort(vecs, axis=1)
    srt = np.take_along_axis(vecs, order, axis=1)
    new = np.ones_like(srt, dtype=bool)
    new[:, 1:] = srt[:, 1:] != srt[:, :-1]
    gtype = np.int32 if vecs.shape[1] < 2**31 else np.int64
    sorted_groups = np.cumsum(new, axis=1, dtype=gtype) - 1
    groups = np.empty(vecs.shape, dtype=gtype)
    np.put_along_axis(groups, order, sorted_groups, axis=1)
    tied = ~new.all(axis=1)
    tie_rows = np.full(len(vecs), -1, dtype=np.int64)
    tie_rows[tied] = np.arange(int(tied.sum()))
    stype = np.int16 if n <= 2**15 else np.int32
    return RankPlan(
        si=iu.astype(stype)[order],
        sj=ju.astype(stype)[order],
        groups=groups,
        tie_rows=tie_rows,
        sorted_groups=np.ascontiguousarray(sorted_groups[tied]),
        rank_dtype=np.int32 if n < 2**16 else np.int64,
    )


@numba.njit(nogil=True, cache=True)
def kept_pairs(
    counts: np.ndarray, iu: np.ndarray, ju: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int, float]:
    """Pairs a resample keeps (w = c_i c_j > 0) and their weights; N = sum(w) and, for the rank
    variance of rows without ties, sum(w^3 - w)."""
    pidx = np.empty(iu.shape[0], dtype=np.int64)
    wp = np.empty(iu.shape[0], dtype=np.int64)
    m = 0
    n_tot = np.int64(0)
    cubes = np.int64(0)
    for p in range(iu.shape[0]):
        w = np.int64(counts[iu[p]]) * counts[ju[p]]
        if w > 0:
            pidx[m] = p
            wp[m] = w
            m += 1
            n_tot += w
            cubes += w * w * w - w
    return pidx[:m], wp[:m], n_tot, float(cubes)


@numba.njit(nogil=True, cache=True)
def resample_ranks(
    si: np.ndarray,
    sj: np.ndarray,
    groups: np.ndarray,
    tie_rows: np.ndarray,
    sorted_groups: np.ndarray,
    counts: np.ndarray,
    pidx: np.ndarray,
    n_tot: int,
    cubes: float,
    val: np.ndarray,
    out: np.ndarray,
    tiesum: np.ndarray,
) -> None:
    """Doubled centred weighted mid-ranks of the kept pairs pidx of every row, into out[r].

    Pair p gets 2 * (mid-rank - (N + 1) / 2), N = sum(w): an exact integer whatever the weights.
    One pass in the row's sorted order gives each tie group its value (val, by group id), one
    gather hands it to the kept pairs. tiesum[r] = sum over tie groups (of the expanded vector)
    of G^3 - G, so sum(w (rank - mean)^2) = (N^3 - N - T) / 12; `cubes` is that sum for a row
    without ties.
    """
    rows, m_all = si.shape
    for r in range(rows):
        before = np.int64(0)
        t = tie_rows[r]
        if t < 0:
            for k in range(m_all):
                wk = np.int64(counts[si[r, k]]) * counts[sj[r, k]]
                val[k] = 2 * before + wk - n_tot
                before += wk
            tiesum[r] = cubes
        else:
            sg = sorted_groups[t]
            ties = np.int64(0)
            k = 0
            while k < m_all:
                key = sg[k]
                g = np.int64(counts[si[r, k]]) * counts[sj[r, k]]
                e = k + 1
                while e < m_all and sg[e] == key:
                    g += np.int64(counts[si[r, e]]) * counts[sj[r, e]]
                    e += 1
                val[key] = 2 * before + g - n_tot
                ties += g * g * g - g
                before += g
                k = e
            tiesum[r] = float(ties)
        for j in range(pidx.shape[0]):
            out[r, j] = val[groups[r, pidx[j]]]


@numba.njit(nogil=True, cache=True)
def weighted_cross(ra: np.ndarray, rb: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
    """out[a, b] = sum_j w_j ra[a, j] rb[b, j] in float64, summed in a fixed order.

    Blocks of BLOCK pairs keep w * ra[a] in cache while every row of rb passes; four partial
    sums per block let the compiler vectorise without reassociating, so the result is the same
    on every machine and thread count (BLAS would pick its own order and threads).
    """
    na, m = ra.shape
    nb = rb.shape[0]
    out[:, :] = 0.0
    wa = np.empty((na, BLOCK))
    for c0 in range(0, m, BLOCK):
        c1 = min(m, c0 + BLOCK)
        size = c1 - c0
        for a in range(na):
            for j in range(size):
                wa[a, j] = float(w[c0 + j]) * float(ra[a, c0 + j])
        for b in range(nb):
            for a in range(na):
                s0 = 0.0
                s1 = 0.0
                s2 = 0.0
                s3 = 0.0
                j = 0
                while j + 4 <= size:
                    s0 += wa[a, j] * float(rb[b, c0 + j])
                    s1 += wa[a, j + 1] * float(rb[b, c0 + j + 1])
                    s2 += wa[a, j + 2] * float(rb[b, c0 + j + 2])
                    s3 += wa[a, j + 3] * float(rb[b, c0 + j + 3])
                    j += 4
                while j < size:
                    s0 += wa[a, j] * float(rb[b, c0 + j])
                    j += 1
                out[a, b] += (s0 + s1) + (s2 + s3)


@numba.njit(nogil=True, cache=True)
def pooled_rank_products(
    table: np.ndarray,
    leave: int,
    offset: int,
    key_bits: int,
    n_tot: int,
    keys: np.ndarray,
    keys_tmp: np.ndarray,
    recs: np.ndarray,
    recs_tmp: np.ndarray,
    acc: np.ndarray,
) -> float:
    """Rank the pairs by their pooled rank and correlate, with no random memory access.

    table[p] = (w, doubled centred rank of each subject) of kept pair p. The pooled key is the
    sum of the subjects' ranks, column 1 + `leave` left out (-1: none): integers, so it orders
    pairs exactly like the mean rank; + `offset` makes it non-negative, below 2^key_bits. An LSD
    radix sort (<= 11-bit digits, stable) moves table rows with their keys (for a leave-one-out
    pool only the weight and the left-out subject's rank), so the last
    pass reads them in pooled order and sequentially: each tie group gets its doubled centred
    weighted mid-rank R (as `resample_ranks`) and acc[r] = sum_p w_p R_p table[p, 1 + r], for
    r = `leave` only when a subject is left out (the others stay 0).
    Returns the tie sum of the pooled ranks. Buffers: keys*, (m,), recs*, table's shape.
    """
    m, cols = table.shape
    # a leave-one-out pool is only correlated with the subject it leaves out: move just the
    # weight and that subject's rank (the other columns of the buffers are never read)
    narrow = leave >= 0
    lo, hi = (leave + 1, leave + 2) if leave >= 0 else (1, cols)
    passes = max(1, (key_bits + RADIX_BITS - 1) // RADIX_BITS)
    digit = (key_bits + passes - 1) // passes
    size = 1 << digit
    start = np.zeros((passes, size + 1), dtype=np.int64)
    for p in range(m):
        v = np.int64(offset)
        for r in range(1, cols):
            if r != leave + 1:
                v += np.int64(table[p, r])
        keys[p] = v
        for q in range(passes):
            start[q, ((v >> (q * digit)) & (size - 1)) + 1] += 1
    for q in range(passes):
        for d in range(size):
            start[q, d + 1] += start[q, d]
    src_k, dst_k, src_r, dst_r = keys, keys_tmp, table, recs
    for q in range(passes):
        sh = q * digit
        for p in range(m):
            v = src_k[p]
            d = (v >> sh) & (size - 1)
            i = start[q, d]
            start[q, d] = i + 1
            dst_k[i] = v
            if narrow:
                dst_r[i, 0] = src_r[p, 0]
                dst_r[i, lo] = src_r[p, lo]
            else:
                for c in range(cols):
                    dst_r[i, c] = src_r[p, c]
        src_k, dst_k = dst_k, (keys if q == 0 else src_k)
        src_r, dst_r = dst_r, (recs_tmp if q == 0 else src_r)
    acc[:] = 0.0
    before = np.int64(0)
    tiesum = np.int64(0)
    k = 0
    while k < m:
        key = src_k[k]
        g = np.int64(src_r[k, 0])
        e = k + 1
        while e < m and src_k[e] == key:
            g += src_r[e, 0]
            e += 1
        value = float(2 * before + g - n_tot)
        for q in range(k, e):
            wv = float(src_r[q, 0]) * value
            for r in range(lo, hi):
                acc[r - 1] += wv * float(src_r[q, r])
        tiesum += g * g * g - g
        before += g
        k = e
    return float(tiesum)

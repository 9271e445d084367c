"""Weighted mid-ranks: Spearman on a stimulus-bootstrap resample without building the resample.

A resample of stimuli with counts c repeats pair (i, j) c_i * c_j times and drops self-pairs, so
the resampled RDM vector is the original pairs with integer weights w = c_i c_j (times the pair
mask). Ranking the expanded vector with average ties equals giving each kept pair the weighted
mid-rank (weight of smaller pairs) + (weight of its tie group + 1) / 2. Only pairs with w > 0 take
part, and their order is the fixed order of the original values: the sort key is each pair's
precomputed rank position, packed with the pair's local index into one int64 so that a plain
(SIMD) sort replaces an argsort. Results equal rsatoolbox's rankdata on the expanded resample.
"""

from __future__ import annotations

import numpy as np


def rank_keys(vecs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer sort keys (k, P) that order each row like its values, equal keys for equal values.

    Returns the keys and, per row, whether it has ties (those rows need the tie-group path).
    """
    order = np.argsort(vecs, axis=1)
    srt = np.take_along_axis(vecs, order, axis=1)
    new = np.ones_like(srt, dtype=bool)
    new[:, 1:] = srt[:, 1:] != srt[:, :-1]
    group = np.cumsum(new, axis=1) - 1
    keys = np.empty_like(order)
    np.put_along_axis(keys, order, group, axis=1)
    return keys, ~new.all(axis=1)


def weighted_ranks(keys: np.ndarray, w: np.ndarray, ties: bool, out: np.ndarray) -> float:
    """Weighted mid-ranks of items with non-negative integer `keys` and int64 weights `w`.

    Writes rank - mean rank + h into `out`, with h = (N + w) / 2 and N = sum(w): for untied
    keys that is just the inclusive cumulative weight, an exact integer, and h is the same for
    every vector, so callers subtract it once inside a matrix product instead of per vector.
    Returns the tie correction's excess over sum(w^3 - w): the rank variance is
    (N^3 - N - sum(w^3 - w) - excess) / 12. With `ties=False` keys must be distinct (not
    checked). Only tied items are revisited, so rare ties cost little. Pass only w > 0.
    """
    m = len(keys)
    shift = max(1, int(m).bit_length())
    packed = keys << shift
    packed |= np.arange(m, dtype=np.int64)
    packed.sort()
    loc = packed & ((1 << shift) - 1)
    ws = w[loc]
    cs = np.cumsum(ws)
    excess = 0.0
    if ties:
        ksorted = packed >> shift
        dup = np.flatnonzero(ksorted[1:] == ksorted[:-1])
        if len(dup):
            tied = np.zeros(m, dtype=bool)
            tied[dup] = True
            tied[dup + 1] = True
            pos = np.flatnonzero(tied)
            kt = ksorted[pos]
            new = np.ones(len(pos), dtype=bool)
            new[1:] = kt[1:] != kt[:-1]
            gid = np.cumsum(new) - 1
            wt = ws[pos].astype(np.float64)
            gw = np.bincount(gid, weights=wt)
            before = (cs[pos] - wt)[new]
            cs = cs.astype(np.float64)
            # (before + (G + 1)/2) - (N + 1)/2 + (N + w)/2: mid-rank in the same shifted form
            cs[pos] = before[gid] + (gw[gid] + wt) / 2.0
            excess = float(np.sum(gw**3 - gw) - np.sum(wt**3 - wt))
    out[loc] = cs
    return excess


def present_pairs(
    counts: np.ndarray, iu: np.ndarray, ju: np.ndarray, keep: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and integer weights c_i c_j of the pairs a resample keeps (weight > 0)."""
    c = counts.astype(np.int64)
    w_all = c[iu] * c[ju]
    if keep is not None:
        w_all *= keep
    idx = np.flatnonzero(w_all)
    return idx, w_all[idx]

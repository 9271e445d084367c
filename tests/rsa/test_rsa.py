"""RSA engine: RDMs, comparisons, ceilings and bootstrap against rsatoolbox 0.3.2 and scipy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from rsatoolbox.data import Dataset
from rsatoolbox.inference import boot_noise_ceiling
from rsatoolbox.rdm import RDMs, calc_rdm
from rsatoolbox.rdm import compare as rsa_compare
from scipy.spatial.distance import pdist, squareform
from scipy.stats import kendalltau, pearsonr, spearmanr

from snnrsa.rsa import (
    GramAccumulator,
    bootstrap_compare,
    bootstrap_indices,
    bootstrap_noise_ceiling,
    bootstrap_p,
    bootstrap_score,
    compare,
    compute_rdm,
    correlation_rdm,
    crossnobis_rdm,
    euclidean_rdm,
    from_rsatoolbox,
    loso_noise_ceiling,
    percentile_ci,
    score,
    spearman,
    spearman_brown,
    split_session_ceiling,
    streamed_rdm,
    to_rsatoolbox,
    upper_tri,
)
from snnrsa.rsa._wrank import pooled_rank_products

TOL = 1e-8
RSA_METHODS = ("spearman", "corr", "tau-a", "cosine", "cosine_cov", "corr_cov")


def random_patterns(seed: int, n: int = 24, p: int = 200, offset: float = 3.0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, p)) + offset


def structured_rdms(seed: int, k: int, n: int = 24) -> np.ndarray:
    """Condensed RDMs with category structure, noise, and (in the last one) heavy ties."""
    rng = np.random.default_rng(seed)
    cat = np.repeat(np.arange(4), n // 4)
    model = (cat[:, None] != cat[None, :]).astype(float)
    out = [
        upper_tri(model + s * rng.standard_normal((n, n)).clip(-1, 1) ** 2)
        for s in np.linspace(0.2, 2.0, k)
    ]
    out[-1] = upper_tri(model)
    return np.array(out)


def noisy_subjects(seed: int, s: int = 4, n: int = 24) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, 6))
    return np.array([pdist(base + rng.standard_normal((n, 6)), "correlation") for _ in range(s)])


# ---------------------------------------------------------------- RDMs


@pytest.mark.parametrize("seed", [0, 1])
def test_rdms_match_rsatoolbox_and_scipy(seed):
    x = random_patterns(seed)
    ds = Dataset(x)
    ref_corr = calc_rdm(ds, method="correlation").get_matrices()[0]
    ref_euc = calc_rdm(ds, method="euclidean").get_matrices()[0]
    np.testing.assert_allclose(correlation_rdm(x), ref_corr, atol=TOL)
    np.testing.assert_allclose(euclidean_rdm(x, squared=True, per_feature=True), ref_euc, atol=TOL)
    np.testing.assert_allclose(compute_rdm(x, "cosine"), squareform(pdist(x, "cosine")), atol=TOL)
    np.testing.assert_allclose(euclidean_rdm(x), squareform(pdist(x)), atol=TOL)
    np.testing.assert_allclose(
        euclidean_rdm(x, squared=True), squareform(pdist(x, "sqeuclidean")), atol=1e-7
    )


@pytest.mark.parametrize("method", ["correlation", "cosine", "euclidean", "sqeuclidean_mean"])
def test_streamed_rdm_equals_brute_force(method):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((15, 1000)) * rng.uniform(0.5, 3, (15, 1)) + 10.0
    brute = {
        "correlation": lambda: squareform(pdist(x, "correlation")),
        "cosine": lambda: squareform(pdist(x, "cosine")),
        "euclidean": lambda: squareform(pdist(x)),
        "sqeuclidean_mean": lambda: squareform(pdist(x, "sqeuclidean")) / x.shape[1],
    }[method]()
    widths = [1, 7, 300, 92, 600]
    edges = np.cumsum([0] + widths)
    blocks = [x[:, a:b] for a, b in itertools.pairwise(edges)]
    np.testing.assert_allclose(streamed_rdm(blocks, method), brute, atol=TOL)
    np.testing.assert_allclose(compute_rdm(x, method, block_features=33), brute, atol=TOL)
    tensor_blocks = [torch.from_numpy(b) for b in blocks]
    np.testing.assert_allclose(streamed_rdm(tensor_blocks, method), brute, atol=TOL)
    # float32 compute keeps float32 accuracy despite the large offset (no cancellation)
    f32 = streamed_rdm([b.astype(np.float32) for b in blocks], method)
    np.testing.assert_allclose(f32, brute, atol=2e-5 * max(1.0, brute.max()))


def test_gram_accumulator_flattens_maps_and_reports_errors():
    x = random_patterns(2, n=6, p=48)
    acc = GramAccumulator("correlation")
    acc.update(torch.from_numpy(x[:, :24]).reshape(6, 2, 3, 4))
    acc.update(x[:, 24:])
    assert acc.n_features == 48
    np.testing.assert_allclose(acc.rdm(), squareform(pdist(x, "correlation")), atol=TOL)
    with pytest.raises(ValueError, match="5 conditions"):
        acc.update(x[:5])
    bad = x.copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        correlation_rdm(bad)
    const = x.copy()
    const[4] = 1.0
    with pytest.raises(ValueError, match=r"constant pattern\(s\) at rows \[4\]"):
        correlation_rdm(const)
    with pytest.raises(ValueError, match="method must be one of"):
        GramAccumulator("manhattan")


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
def test_crossnobis_matches_rsatoolbox():
    rng = np.random.default_rng(3)
    n_cond, n_sess, p = 6, 3, 40
    signal = rng.standard_normal((n_cond, p))
    cond = np.tile(np.arange(n_cond), n_sess * 2)
    sess = np.repeat(np.arange(n_sess), n_cond * 2)
    x = signal[cond] + rng.standard_normal((len(cond), p))
    ds = Dataset(x, obs_descriptors={"cond": cond, "sess": sess})
    ref = calc_rdm(ds, method="crossnobis", descriptor="cond", cv_descriptor="sess")
    mine, labels = crossnobis_rdm(x, cond, sess)
    np.testing.assert_allclose(mine, ref.get_matrices()[0], atol=TOL)
    assert list(labels) == list(range(n_cond))
    prec = np.linalg.inv(np.cov(x.T) + np.eye(p))
    ref_n = calc_rdm(ds, method="crossnobis", descriptor="cond", cv_descriptor="sess", noise=prec)
    np.testing.assert_allclose(
        crossnobis_rdm(x, cond, sess, noise=prec)[0], ref_n.get_matrices()[0], atol=TOL
    )
    with pytest.raises(ValueError, match="no observation in session"):
        crossnobis_rdm(x[1:], cond[1:], np.where(cond[1:] == 0, 9, sess[1:]))


# ---------------------------------------------------------------- comparisons


@pytest.mark.parametrize("kind", ["random", "structured"])
@pytest.mark.parametrize("masked", [False, True])
def test_compare_matches_rsatoolbox(kind, masked):
    if kind == "random":
        a, b = noisy_subjects(1, 3), noisy_subjects(2, 2)
    else:
        a, b = structured_rdms(3, 3), structured_rdms(4, 2)
    mask = np.random.default_rng(7).random(a.shape[1]) > 0.3 if masked else None
    ra, rb = a.copy(), b.copy()
    if masked:
        ra[:, ~mask] = np.nan
        rb[:, ~mask] = np.nan
    for method in RSA_METHODS:
        ref = rsa_compare(RDMs(ra), RDMs(rb), method)
        np.testing.assert_allclose(compare(a, b, method, mask), ref, atol=TOL, err_msg=method)


def test_compare_matches_scipy_and_shapes():
    a, b = noisy_subjects(4, 2), structured_rdms(5, 3)
    got = compare(a, b, "kendall_tau_a")
    assert got.shape == (2, 3)
    x, y = a[0], b[2]  # b[2] is the tied category RDM: tau-a differs from tau-b here
    n0 = len(x) * (len(x) - 1) / 2
    s = np.sign(x[:, None] - x[None, :]) * np.sign(y[:, None] - y[None, :])
    assert got[0, 2] == pytest.approx(np.triu(s, 1).sum() / n0, abs=TOL)
    assert got[0, 2] != pytest.approx(kendalltau(x, y).statistic, abs=1e-3)
    assert compare(a[0], b[0], "pearson") == pytest.approx(pearsonr(a[0], b[0])[0], abs=TOL)
    sq = squareform(a[0])
    assert spearman(sq, squareform(b[1])) == pytest.approx(spearmanr(a[0], b[1])[0], abs=TOL)
    assert spearman(a[0], b[1]) == pytest.approx(spearmanr(a[0], b[1])[0], abs=TOL)
    stack = np.stack([squareform(v) for v in noisy_subjects(6, 6)]).reshape(2, 3, 24, 24)
    assert compare(a, stack).shape == (2, 2, 3)
    assert compare(torch.from_numpy(sq), sq).shape == ()


def test_conventions():
    models, subj = noisy_subjects(7, 2), noisy_subjects(8, 4)
    per = score(models, subj)
    np.testing.assert_allclose(
        per, [np.mean([spearmanr(m, s)[0] for s in subj]) for m in models], atol=TOL
    )
    mean = score(models, subj, convention="mean_rdm")
    np.testing.assert_allclose(mean, [spearmanr(m, subj.mean(0))[0] for m in models], atol=TOL)
    roi_stack = np.stack([subj, subj[::-1]])  # (roi, subject, P)
    assert score(models, roi_stack).shape == (2, 2)


def test_input_errors_are_named():
    a = squareform(noisy_subjects(9, 1)[0])
    with pytest.raises(ValueError, match="a is not symmetric"):
        compare(a + np.triu(np.ones_like(a)), a)
    with pytest.raises(ValueError, match="b has NaN"):
        bad = a.copy()
        bad[0, 1] = bad[1, 0] = np.nan
        compare(a, bad)
    bad = a.copy()
    bad[0, 1] = bad[1, 0] = np.nan
    keep = np.ones_like(a, dtype=bool)
    keep[0, 1] = keep[1, 0] = False
    assert np.isfinite(compare(a, bad, mask=keep))
    with pytest.raises(ValueError, match="mask must have shape"):
        compare(a, a, mask=np.ones(5, bool))
    with pytest.raises(ValueError, match="24 conditions but b has 10"):
        compare(a, a[:10, :10])
    with pytest.raises(ValueError, match="method must be one of"):
        compare(a, a, "kendall")
    with pytest.raises(ValueError, match="condensed RDM length"):
        compare(np.ones(7), np.ones(7))


def test_rsatoolbox_roundtrip():
    v = noisy_subjects(10, 3)
    mask = np.random.default_rng(0).random(v.shape[1]) > 0.2
    obj = to_rsatoolbox(v, mask=mask, rdm_descriptors={"subject": ["a", "b", "c"]})
    assert obj.n_rdm == 3 and obj.rdm_descriptors["subject"] == ["a", "b", "c"]
    mats, m2 = from_rsatoolbox(obj)
    assert np.array_equal(upper_tri(m2), mask)
    np.testing.assert_allclose(upper_tri(mats)[:, mask], v[:, mask])
    assert from_rsatoolbox(to_rsatoolbox(v))[1] is None


# ---------------------------------------------------------------- noise ceilings


@pytest.mark.parametrize("method", ["spearman", "corr", "cosine", "tau-a"])
@pytest.mark.parametrize("masked", [False, True])
def test_loso_ceiling_matches_rsatoolbox(method, masked):
    subj = noisy_subjects(11, 5)
    mask = np.random.default_rng(1).random(subj.shape[1]) > 0.25 if masked else None
    ref_in = subj.copy()
    if masked:
        ref_in[:, ~mask] = np.nan
    with pytest.warns(UserWarning) if method == "tau-a" else _nothing():
        ref = boot_noise_ceiling(RDMs(ref_in), method=method)
    np.testing.assert_allclose(loso_noise_ceiling(subj, method, mask), ref, atol=TOL)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_loso_mean_pooling_is_subject_vs_mean_of_others():
    subj = noisy_subjects(12, 4)
    lower, upper = loso_noise_ceiling(subj, pooling="mean")
    expect = np.mean([spearmanr(np.delete(subj, s, 0).mean(0), subj[s])[0] for s in range(4)])
    assert lower == pytest.approx(expect, abs=TOL)
    assert upper == pytest.approx(np.mean([spearmanr(subj.mean(0), s)[0] for s in subj]), abs=TOL)


def test_split_session_ceiling():
    rng = np.random.default_rng(13)
    n_cond, n_sess, p = 10, 4, 60
    signal = rng.standard_normal((n_cond, p))
    cond = np.tile(np.arange(n_cond), n_sess)
    sess = np.repeat(np.arange(n_sess), n_cond)
    x = signal[cond] + 0.8 * rng.standard_normal((len(cond), p))
    ceil, labels = split_session_ceiling(x, cond, sess)
    odd = correlation_rdm(np.stack([x[(cond == c) & (sess % 2 == 0)].mean(0) for c in labels]))
    even = correlation_rdm(np.stack([x[(cond == c) & (sess % 2 == 1)].mean(0) for c in labels]))
    r = spearmanr(upper_tri(odd), upper_tri(even))[0]
    assert ceil.split_r == pytest.approx(r, abs=TOL)
    assert ceil.reliability == pytest.approx(2 * r / (1 + r), abs=TOL)
    assert ceil.ceiling == pytest.approx(np.sqrt(2 * r / (1 + r)), abs=TOL)
    assert spearman_brown(0.5, 3) == pytest.approx(0.75)


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_indices_are_rsatoolbox_draws():
    idx = bootstrap_indices(30, 4, seed=5)
    np.random.seed(5)
    for row in idx:
        assert np.array_equal(row, np.random.randint(0, 30, size=30))


def _rsatoolbox_resample(v: np.ndarray, mask, idx) -> RDMs:
    v = v.copy()
    if mask is not None:
        v[:, ~mask] = np.nan
    return RDMs(v).subsample_pattern("index", idx)


@pytest.mark.parametrize("masked", [False, True])
def test_bootstrap_matches_rsatoolbox_resamples(masked):
    models = structured_rdms(14, 3)  # includes a heavily tied RDM
    subj = noisy_subjects(15, 3)
    subj[0, :6] = subj[0, 6]  # ties in a subject too
    mask = np.random.default_rng(2).random(subj.shape[1]) > 0.2 if masked else None
    idx = bootstrap_indices(24, 6, seed=1)
    idx[4, :12] = 3  # pair weights beyond int8: a stimulus drawn 12 times (144)
    for method in ("spearman", "corr", "cosine"):
        # two threads share the resamples: results must not depend on it
        boot = bootstrap_compare(models, subj, method, mask, indices=idx, n_jobs=2)
        ceil = bootstrap_noise_ceiling(subj, method, mask, indices=idx, n_jobs=2)
        for b, row in enumerate(idx):
            rs = _rsatoolbox_resample(subj, mask, row)
            ref = rsa_compare(_rsatoolbox_resample(models, mask, row), rs, method)
            np.testing.assert_allclose(boot[b], ref, atol=TOL, err_msg=method)
            np.testing.assert_allclose(ceil[b], boot_noise_ceiling(rs, method=method), atol=TOL)


def test_bootstrap_heavy_resample_matches_rsatoolbox():
    """One stimulus drawn 190 of 200 times: pair weights 190^2 need more than int16."""
    rng = np.random.default_rng(4)
    base = rng.standard_normal((200, 6))
    rdms = np.array([pdist(base + rng.standard_normal((200, 6)), "correlation") for _ in range(3)])
    row = np.r_[np.zeros(190, dtype=int), rng.choice(np.arange(1, 200), 10, replace=False)]
    rs = _rsatoolbox_resample(rdms, None, row)
    for method in ("spearman", "corr"):
        got = bootstrap_compare(rdms[:1], rdms[1:], method, indices=row[None])[0]
        ref = rsa_compare(
            _rsatoolbox_resample(rdms[:1], None, row), _rsatoolbox_resample(rdms[1:], None, row), method
        )
        np.testing.assert_allclose(got, ref, atol=TOL)
        ceil = bootstrap_noise_ceiling(rdms, method, indices=row[None])[0]
        np.testing.assert_allclose(ceil, boot_noise_ceiling(rs, method=method), atol=TOL)


def test_bootstrap_ceiling_radix_passes_match_rsatoolbox():
    """60 stimuli: pooled-rank keys need two radix digits (720 stimuli need two as well)."""
    rng = np.random.default_rng(7)
    base = rng.standard_normal((60, 5))
    subj = np.array([pdist(base + rng.standard_normal((60, 5)), "correlation") for _ in range(3)])
    subj[1] = np.round(subj[1], 1)  # a subject with many ties
    idx = bootstrap_indices(60, 3, seed=2)
    ceil = bootstrap_noise_ceiling(subj, "spearman", indices=idx)
    boot = bootstrap_compare(subj[:1], subj[1:], "spearman", indices=idx)
    for b, row in enumerate(idx):
        rs = _rsatoolbox_resample(subj, None, row)
        np.testing.assert_allclose(ceil[b], boot_noise_ceiling(rs, method="spearman"), atol=TOL)
        pair = [_rsatoolbox_resample(v, None, row) for v in (subj[:1], subj[1:])]
        ref = rsa_compare(*pair, "spearman")
        np.testing.assert_allclose(boot[b], ref, atol=TOL)


def test_pooled_rank_products_three_digits():
    """The compiled LSD radix path on 30-bit keys (3 digits) equals a plain sort."""
    rng = np.random.default_rng(3)
    m, rows = 5000, 3
    table = np.empty((m, rows + 1), dtype=np.int64)
    table[:, 0] = rng.integers(1, 5, m)
    table[:, 1:] = rng.integers(-(2**27), 2**27, (m, rows)) // 2**20 * 2**20  # coarse: ties
    n_tot = int(table[:, 0].sum())
    offset = rows * 2**27
    bits = int(2 * offset).bit_length()
    assert bits > 22
    keys = (np.empty(m, dtype=np.int64), np.empty(m, dtype=np.int64))
    recs = (np.empty_like(table), np.empty_like(table))
    for leave in (-1, 1):
        acc = np.empty(rows)
        ties = pooled_rank_products(table, leave, offset, bits, n_tot, *keys, *recs, acc)
        key = table[:, 1:].sum(1) - (table[:, 1 + leave] if leave >= 0 else 0) + offset
        _, group = np.unique(key, return_inverse=True)
        gw = np.bincount(group, weights=table[:, 0])
        value = (2 * (np.cumsum(gw) - gw) + gw - n_tot)[group]
        expected = (table[:, 0] * value) @ table[:, 1:]
        if leave >= 0:  # a leave-one-out pool is correlated with the left-out subject only
            expected = np.where(np.arange(rows) == leave, expected, 0.0)
        np.testing.assert_allclose(acc, expected, rtol=1e-12)
        assert ties == pytest.approx(np.sum(gw**3 - gw))
        assert len(gw) < m  # ties present


def test_bootstrap_identity_resample_and_conventions():
    models, subj = noisy_subjects(16, 2), noisy_subjects(17, 3)
    ident = np.arange(24)[None]
    np.testing.assert_allclose(
        bootstrap_compare(models, subj, indices=ident)[0], compare(models, subj), atol=TOL
    )
    np.testing.assert_allclose(
        bootstrap_noise_ceiling(subj, indices=ident)[0], loso_noise_ceiling(subj), atol=TOL
    )
    per = bootstrap_score(models, subj, n_boot=5, seed=3)
    shared = bootstrap_compare(models, subj, n_boot=5, seed=3).mean(-1)
    np.testing.assert_allclose(per, shared, atol=TOL)
    assert bootstrap_score(models, subj, convention="mean_rdm", n_boot=5).shape == (5, 2)
    degenerate = np.zeros((1, 24), dtype=int)
    assert np.isnan(bootstrap_compare(models, subj, indices=degenerate)).all()
    with pytest.raises(ValueError, match="n_jobs"):
        bootstrap_compare(models, subj, n_boot=2, n_jobs=0)


def test_percentile_ci_and_bootstrap_p():
    x = np.arange(1, 101, dtype=float)[:, None] * [1.0, -1.0]
    lo, hi = percentile_ci(x, 0.9)
    np.testing.assert_allclose(lo, np.percentile(x, 5, axis=0))
    np.testing.assert_allclose(hi, np.percentile(x, 95, axis=0))
    np.testing.assert_allclose(bootstrap_p(x), [2 / 101, 2 / 101])
    assert bootstrap_p(np.r_[-np.ones(50), np.ones(50)]) == 1.0

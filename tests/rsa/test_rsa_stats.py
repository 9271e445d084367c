"""RSA statistics: hand-computed sign-flip, effect size, FDR/Holm, partial RSA; references; mapping."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import pdist, squareform
from scipy.stats import rankdata, spearmanr

from snnrsa.rsa import (
    adjust_within_families,
    cohens_d_paired,
    compare,
    correlation_rdm,
    fdr_bh,
    gabor_energy_rdm,
    holm,
    luminance_rdm,
    mean_rgb_rdm,
    partial_compare,
    partial_spearman,
    permutation_test,
    pixel_rdm,
    reference_rdms,
    sign_flip_test,
)
from snnrsa.rsa.mapping import (
    best_layer,
    best_layer_scores,
    fixed_layer_scores,
    per_seed_best_layer,
)

TOL = 1e-8


def test_sign_flip_hand_computed():
    # d = 1, 2, 3: the 8 sign assignments give sums 6, 4, 2, 0, 0, -2, -4, -6; observed 6
    res = sign_flip_test([1.0, 2.0, 3.0])
    assert res.statistic == pytest.approx(2.0)
    assert res.p == pytest.approx(2 / 8)
    assert sign_flip_test([1.0, 2.0, 3.0], alternative="greater").p == pytest.approx(1 / 8)
    assert sign_flip_test([1.0, 2.0, 3.0], alternative="less").p == pytest.approx(1.0)
    a, b = np.array([0.3, 0.5, 0.4, 0.6, 0.2]), np.array([0.1, 0.2, 0.3, 0.1, 0.15])
    assert sign_flip_test(a, b).p == pytest.approx(2 / 32)  # smallest possible with 5 seeds
    assert sign_flip_test(a, b, "greater").p == pytest.approx(1 / 32)
    assert sign_flip_test(b, a, "greater").p == pytest.approx(1.0)
    # d = 1, -1, 2: sums 2, 4, 0, 2, -2, 0, -4, -2; |sum| >= |2| for 6 of 8
    assert sign_flip_test([1.0, -1.0, 2.0]).p == pytest.approx(6 / 8)
    with pytest.raises(ValueError, match="same shape"):
        sign_flip_test([1.0, 2.0], [1.0])


def test_cohens_d_paired():
    assert cohens_d_paired([2.0, 3.0, 4.0], [1.0, 1.0, 1.0]) == pytest.approx(2.0)
    assert np.isnan(cohens_d_paired([1.0, 1.0], [0.0, 0.0]))


def test_fdr_bh_and_holm_hand_computed():
    p = [0.01, 0.04, 0.03, 0.2]
    np.testing.assert_allclose(fdr_bh(p), [0.04, 0.16 / 3, 0.16 / 3, 0.2])
    np.testing.assert_allclose(holm(p), [0.04, 0.09, 0.09, 0.2])
    np.testing.assert_allclose(fdr_bh([0.5, np.nan, 0.01]), [0.5, np.nan, 0.02])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fdr_bh([1.5])
    table = pd.DataFrame({"family": ["a", "a", "b", "b", "a"], "p": [0.01, 0.04, 0.01, 0.5, 0.03]})
    out = adjust_within_families(table, method="holm")
    np.testing.assert_allclose(out["p_holm"], [0.03, 0.06, 0.02, 0.5, 0.06])
    assert "p_holm" not in table.columns


def test_partial_rsa_hand_computed():
    # z pairs items (1,2), (3,4), (5,6); within each pair x rises while y falls: partial rho = -1
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    y = np.array([2.0, 1.0, 4.0, 3.0, 6.0, 5.0])
    z = np.array([1.0, 1.0, 2.0, 2.0, 3.0, 3.0])
    assert float(compare(x, y)) == pytest.approx(0.8285714285714, abs=1e-12)
    assert partial_spearman(x, y, z) == pytest.approx(-1.0, abs=TOL)


def test_partial_rsa_matches_formula_and_regression():
    rng = np.random.default_rng(0)
    v = [pdist(rng.standard_normal((20, 5)), "correlation") for _ in range(4)]
    x, y, z, w = v
    x = x + z
    y = y + z
    rxy, rxz, ryz = spearmanr(x, y)[0], spearmanr(x, z)[0], spearmanr(y, z)[0]
    expect = (rxy - rxz * ryz) / np.sqrt((1 - rxz**2) * (1 - ryz**2))
    assert partial_spearman(x, y, [z]) == pytest.approx(expect, abs=TOL)
    rank = [rankdata(t) for t in (x, y, z, w)]
    design = np.column_stack([np.ones(len(x)), rank[2], rank[3]])
    res = [r - design @ np.linalg.lstsq(design, r, rcond=None)[0] for r in rank[:2]]
    two = np.corrcoef(res[0], res[1])[0, 1]
    assert partial_spearman(x, y, np.stack([z, w])) == pytest.approx(two, abs=TOL)
    assert partial_compare(np.stack([x, y]), np.stack([y, x, z]), [z]).shape == (2, 3)
    with pytest.raises(ValueError, match="collinear"):
        partial_spearman(x, y, [z, 2 * z])


def test_permutation_test():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((12, 4))
    m = pdist(base + 0.3 * rng.standard_normal((12, 4)), "correlation")
    b = pdist(base + 0.3 * rng.standard_normal((12, 4)), "correlation")
    res = permutation_test(m, b, n_perm=500, seed=0)
    assert res.statistic == pytest.approx(spearmanr(m, b)[0], abs=TOL)
    assert res.p == pytest.approx(1 / 501)
    slow = permutation_test(m, b, mask=np.ones(len(m), bool), n_perm=200, seed=3)
    fast = permutation_test(m, b, n_perm=200, seed=3)
    np.testing.assert_allclose(slow.null, fast.null, atol=TOL)
    unrelated = pdist(rng.standard_normal((12, 4)))
    assert permutation_test(unrelated, b, n_perm=300, alternative="two-sided").p > 0.01


def _gratings(n_each: int, size: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    imgs = []
    for k in range(n_each):
        phase = 2 * np.pi * k / n_each
        imgs.append(np.sin(2 * np.pi * 4 * xx + phase))  # vertical bars
    for k in range(n_each):
        phase = 2 * np.pi * k / n_each
        imgs.append(np.sin(2 * np.pi * 4 * yy + phase))  # horizontal bars
    return np.repeat(np.stack(imgs)[..., None], 3, axis=-1) * 0.5 + 0.5


def test_reference_rdms():
    imgs = _gratings(3)
    np.testing.assert_allclose(pixel_rdm(imgs), correlation_rdm(imgs.reshape(6, -1)), atol=TOL)
    flat = (
        np.ones((3, 4, 4, 3))
        * np.array([[0.1, 0.2, 0.3], [0.5, 0.5, 0.5], [1.0, 0.0, 0.0]])[:, None, None, :]
    )
    lum = flat[:, 0, 0] @ [0.2126, 0.7152, 0.0722]
    np.testing.assert_allclose(luminance_rdm(flat), np.abs(lum[:, None] - lum[None, :]), atol=TOL)
    np.testing.assert_allclose(mean_rgb_rdm(flat), squareform(pdist(flat[:, 0, 0])), atol=TOL)
    gab = gabor_energy_rdm(imgs)
    within = gab[:3, :3][np.triu_indices(3, 1)].max()
    between = gab[:3, 3:].min()
    assert within < between  # energy is phase-invariant but orientation-selective
    assert set(reference_rdms(imgs)) == {"pixel", "luminance", "mean_rgb", "gabor_energy"}
    with pytest.raises(ValueError, match=r"\(n, H, W, 3\)"):
        pixel_rdm(imgs[..., 0])


def _score_table() -> pd.DataFrame:
    rows = []
    vals = {  # (layer, epoch) -> per-seed subject-mean score
        ("conv1", 0): [0.10, 0.12],
        ("conv2", 0): [0.05, 0.20],
        ("conv1", 1): [0.02, 0.04],
        ("conv2", 1): [0.03, 0.01],
    }
    for (layer, epoch), per_seed in vals.items():
        for seed, v in zip((1, 2), per_seed):
            for subject, delta in (("s1", -0.01), ("s2", 0.01)):
                rows.append(
                    {
                        "rule": "bp",
                        "layer": layer,
                        "roi": "V1",
                        "subject": subject,
                        "seed": seed,
                        "epoch": epoch,
                        "rho": v + delta,
                    }
                )
    return pd.DataFrame(rows)


def test_layer_mapping():
    t = _score_table()
    best = best_layer(t)
    got = {(r.epoch, r.layer): r.rho for r in best.itertuples()}
    assert got == pytest.approx({(0, "conv2"): 0.125, (1, "conv1"): 0.03})
    at_best = best_layer_scores(t)
    assert list(at_best.query("epoch == 0")["rho"]) == pytest.approx([0.05, 0.20])
    per_seed = per_seed_best_layer(t).query("epoch == 0")
    assert list(per_seed["layer"]) == ["conv1", "conv2"]
    assert list(per_seed["rho"]) == pytest.approx([0.10, 0.20])
    fixed = fixed_layer_scores(t, {"V1": "conv1"})
    assert set(fixed["layer"]) == {"conv1"} and len(fixed) == 4
    with pytest.raises(ValueError, match="absent"):
        fixed_layer_scores(t, {"V1": ("conv1", "fc1")})
    with pytest.raises(ValueError, match="lacks columns"):
        best_layer(t.drop(columns="seed"))

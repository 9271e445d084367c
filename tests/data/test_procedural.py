"""The procedural image set: deterministic, balanced, and neither trivial nor unlearnable."""

from dataclasses import replace

import numpy as np
import pytest

from snnrsa.data import procedural as P


def test_classes_and_categories():
    assert len(P.CLASSES) >= 10 and len(set(P.CLASSES)) == len(P.CLASSES)
    assert set(P.CATEGORIES) == set(P.CLASSES)
    assert sorted(set(P.CATEGORIES.values())) == sorted(P.CATEGORY_NAMES)
    assert len(P.CATEGORY_NAMES) == 3
    assert set(P.SHAPES) == set(P.CLASSES)


def test_deterministic_per_seed():
    a, la = P.make_dataset(40, 32, seed=3)
    b, lb = P.make_dataset(40, 32, seed=3)
    c, lc = P.make_dataset(40, 32, seed=4)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(a, c)
    assert not np.array_equal(la, lc)


def test_shapes_dtypes_balance():
    x, y = P.make_dataset(95, 24, seed=0)
    assert x.shape == (95, 24, 24, 3) and x.dtype == np.uint8
    assert y.shape == (95,) and y.dtype == np.int64
    counts = np.bincount(y, minlength=len(P.CLASSES))
    assert counts.max() - counts.min() <= 1
    assert not np.array_equal(y, np.sort(y))  # shuffled
    assert x.std() > 20  # not blank


def test_render_is_a_pure_function_of_params():
    params = P.sample_params(np.arange(12) % len(P.CLASSES), np.random.default_rng(0))
    whole = P.render(params, 32)
    assert np.array_equal(whole[5:9], P.render(params[5:9], 32))
    # Appearance fields change the object, the clutter seed the background.
    p = params[0]
    recoloured = P.render([replace(p, color=(1.0, 0.0, 0.0), texture="plain")], 32)[0]
    moved = P.render([replace(p, clutter_seed=p.clutter_seed + 1)], 32)[0]
    assert not np.array_equal(recoloured, whole[0])
    assert not np.array_equal(moved, whole[0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="image_size"):
        P.make_dataset(10, 4, seed=0)


def _hog(x: np.ndarray, cells: int = 4, bins: int = 8) -> np.ndarray:
    """Gradient-orientation histograms on a cells x cells grid (square-rooted)."""
    g = x.astype(float).mean(-1)
    gy, gx = np.gradient(g, axis=(1, 2))
    mag, ang = np.hypot(gx, gy), np.mod(np.arctan2(gy, gx), np.pi)
    b = np.minimum((ang / np.pi * bins).astype(int), bins - 1)
    n, s, _ = g.shape
    c = np.arange(s) * cells // s
    out = np.zeros((n, cells, cells, bins))
    np.add.at(out, (np.arange(n)[:, None, None], c[:, None], c[None, :], b), mag)
    return np.sqrt(out.reshape(n, -1))


def test_learnable_but_not_trivial():
    x, y = P.make_dataset(3000, 32, seed=11)
    xtr, ytr, xte, yte = x[:2000], y[:2000], x[2000:], y[2000:]
    k = len(P.CLASSES)
    # Pixels are no shortcut: colour, pose and clutter vary within a class.
    a = xtr.reshape(len(xtr), -1).astype(float)
    b = xte.reshape(len(xte), -1).astype(float)
    means = np.stack([a[ytr == c].mean(0) for c in range(k)])
    d = (b**2).sum(1)[:, None] - 2 * b @ means.T + (means**2).sum(1)[None, :]
    ncm = (d.argmin(1) == yte).mean()
    assert ncm < 0.3, ncm
    # Shape is there: a linear read-out of edge-orientation histograms beats chance (1/k) clearly.
    ftr, fte = _hog(xtr), _hog(xte)
    mu, sd = ftr.mean(0), ftr.std(0) + 1e-9
    ftr, fte = np.c_[(ftr - mu) / sd, np.ones(len(ftr))], np.c_[(fte - mu) / sd, np.ones(len(fte))]
    w = np.linalg.solve(ftr.T @ ftr + 10 * np.eye(ftr.shape[1]), ftr.T @ np.eye(k)[ytr])
    acc = ((fte @ w).argmax(1) == yte).mean()
    assert acc > 1.8 / k, acc

"""Training image folders, precomputed RDM files and the 92-image set: loading and bad input."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image

from snnrsa.brain import load_brain
from snnrsa.data.images import load_images
from snnrsa.data.rdm_file import RDMFileError, load_rdm_stack
from snnrsa.data.training import load_training_data
from snnrsa.rsa import correlation_rdm, spearman

from conftest import SHARED, needs_shared, typed_cfg

CICHY = SHARED / "cichy92_algonauts2019"
CIFAR = SHARED / "cifar10_subset"
needs_cichy = needs_shared(CICHY)
needs_cifar = needs_shared(CIFAR)


def random_rdms(n_subj: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([correlation_rdm(rng.normal(size=(n, 20))) for _ in range(n_subj)])


def make_folder(root: Path, classes: dict[str, int], size: int = 40) -> None:
    rng = np.random.default_rng(0)
    for cls, count in classes.items():
        (root / cls).mkdir(parents=True)
        for i in range(count):
            arr = rng.integers(0, 255, (size, size + 8, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / cls / f"{i:04d}.png")


def test_imagefolder_subsets(tmp_path: Path) -> None:
    make_folder(tmp_path / "train", {"cat": 6, "dog": 4})
    make_folder(tmp_path / "test", {"cat": 2, "dog": 2})
    base = ["data=imagefolder", f"data.train_dir={tmp_path / 'train'}",
            f"data.test_dir={tmp_path / 'test'}", "data.n_train=5"]
    fixed = [load_training_data(typed_cfg(base).data, run_seed=s) for s in (0, 1)]
    assert fixed[0].classes == ["cat", "dog"]
    assert fixed[0].train_images.shape == (5, 3, 32, 32)
    assert fixed[0].train_images.dtype.is_floating_point is False
    assert (fixed[0].train_images == fixed[1].train_images).all()  # fixed across seeds
    per_seed = [load_training_data(typed_cfg([*base, "data.subset=per_seed"]).data, run_seed=s)
                for s in range(4)]
    assert any((p.train_images != per_seed[0].train_images).any() for p in per_seed[1:])
    with pytest.raises(ValueError, match="data.n_train=50"):
        load_training_data(typed_cfg([*base[:-1], "data.n_train=50"]).data)


def test_imagefolder_bad_input(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_training_data(typed_cfg(["data=imagefolder", f"data.train_dir={tmp_path}/nowhere"])
                           .data)
    make_folder(tmp_path / "train", {"cat": 2})
    (tmp_path / "train" / "cat" / "9999.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="9999.jpg"):
        load_training_data(typed_cfg(["data=imagefolder", f"data.train_dir={tmp_path / 'train'}",
                                      f"data.test_dir={tmp_path / 'train'}"]).data)


@needs_cifar
def test_cifar_subset_folder_loads() -> None:
    data = load_training_data(typed_cfg(["data=imagefolder", "data.n_train=500"]).data)
    assert data.train_images.shape == (500, 3, 32, 32)
    assert data.test_images.shape == (2000, 3, 32, 32)
    assert data.classes[0] == "airplane" and len(data.classes) == 10
    assert np.bincount(data.test_labels.numpy()).tolist() == [200] * 10


@pytest.mark.parametrize("fmt", ["npy", "npz", "h5", "mat5"])
def test_rdm_file_formats_roundtrip(tmp_path: Path, fmt: str) -> None:
    rdms = random_rdms(3, 7)
    if fmt == "npy":
        path, var = tmp_path / "r.npy", None
        np.save(path, rdms)
    elif fmt == "npz":
        path, var = tmp_path / "r.npz", "evc"
        np.savez(path, evc=rdms)
    elif fmt == "h5":
        path, var = tmp_path / "r.h5", "evc"
        with h5py.File(path, "w") as f:
            f["evc"] = rdms
    else:
        path, var = tmp_path / "r.mat", "evc"
        scipy.io.savemat(path, {"evc": np.moveaxis(rdms, 0, 2)})
    order = "image,image,subject" if fmt == "mat5" else "subject,image,image"
    np.testing.assert_allclose(load_rdm_stack(path, var, order, 7), rdms)


def test_rdm_file_v73_axes_are_reversed(tmp_path: Path) -> None:
    # MATLAB v7.3 files store arrays with reversed axes; h5py sees (image, image, subject)
    rdms = random_rdms(4, 6)
    path = tmp_path / "r.mat"
    with h5py.File(path, "w") as f:
        f["A"] = np.transpose(rdms)  # what MATLAB writes for a subject x image x image array
    np.testing.assert_allclose(load_rdm_stack(path, "A", "subject,image,image"), rdms)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r[:, :, :-1], "not square"),
        (lambda r: r + np.triu(np.ones_like(r[0]), 1)[None] * 0.5, "not symmetric"),
        (lambda r: r + np.eye(r.shape[1])[None], "diagonal"),
        (lambda r: np.where(np.eye(r.shape[1])[None] == 0, r, r) * np.nan, "NaN"),
    ],
)
def test_rdm_file_rejects_bad_matrices(tmp_path: Path, mutate, message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, evc=mutate(random_rdms(2, 5)))
    with pytest.raises(ValueError, match=message) as err:
        load_rdm_stack(path, "evc", "subject,image,image")
    assert "bad.npz:evc" in str(err.value)


def test_rdm_file_size_and_variable_errors(tmp_path: Path) -> None:
    path = tmp_path / "r.npz"
    np.savez(path, evc=random_rdms(2, 5))
    with pytest.raises(ValueError, match="5 x 5 but there are 6"):
        load_rdm_stack(path, "evc", "subject,image,image", 6)
    with pytest.raises(RDMFileError, match="'it'.*evc"):
        load_rdm_stack(path, "it", "subject,image,image")
    with pytest.raises(RDMFileError, match="not found.*missing.npz"):
        load_rdm_stack(tmp_path / "missing.npz", "evc", "subject,image,image")


def test_rdm_file_brain_checks_images(tmp_path: Path) -> None:
    np.savez(tmp_path / "r.npz", evc=random_rdms(2, 5))
    make_folder(tmp_path / "stim", {"x": 4})
    cfg = typed_cfg(["brain=rdm_file", f"brain.root={tmp_path}", "brain.path=r.npz",
                     "brain.images_dir=stim/x", "brain.image_glob=*.png", "+brain.rois.EVC=evc"])
    with pytest.raises(ValueError, match="5 x 5 but there are 4"):
        load_brain(cfg.brain)


@needs_cichy
def test_cichy92_pixel_rdm_matches_published_reference() -> None:
    brain = load_brain(typed_cfg(["brain=cichy92"]).brain)
    assert brain.rois == ["EVC", "IT"] and len(brain.subjects) == 15
    assert brain.stimuli[0] == "image_01.jpg" and brain.stimuli[-1] == "image_92.jpg"
    # the reference values were computed with PIL's default resize filter (bicubic) at 64 x 64
    pixels = load_images([p[0] for p in brain.image_paths], 64, "bicubic").numpy()
    pixel_rdm = correlation_rdm(pixels.reshape(92, -1))
    means = {roi: np.mean([spearman(pixel_rdm, r) for r in brain.rdms[roi]])
             for roi in brain.rois}
    assert round(means["EVC"], 3) == 0.180
    assert round(means["IT"], 3) == 0.147


@needs_cichy
def test_cichy92_leave_one_subject_out_agreement() -> None:
    from snnrsa.rsa.ceiling import loso_noise_ceiling

    brain = load_brain(typed_cfg(["brain=cichy92"]).brain)
    lower = {roi: loso_noise_ceiling(brain.rdms[roi], "spearman", pooling="mean")[0]
             for roi in brain.rois}
    assert round(lower["EVC"], 3) == 0.239
    assert round(lower["IT"], 3) == 0.449

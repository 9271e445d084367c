"""The synthetic THINGS-fMRI set: release layout, determinism, caching, and its ground truth."""

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from snnrsa.config import ThingsBrainConfig
from snnrsa.data import synthetic_brain as SB
from snnrsa.data.things import load_brain_patterns
from snnrsa.rsa import correlation_rdm, spearman

SMALL = {
    "n_concepts": 10,
    "n_sessions": 2,
    "runs_per_session": 2,
    "n_test": 2,
    "image_size": 32,
    "voxels": {"V1": 12, "IT": 8, "unassigned": 5},
}
ROIS = ThingsBrainConfig().rois  # the study's six ROIs, as a THINGS run reads them


@pytest.fixture(scope="module")
def root(cache_dir: Path) -> Path:
    """The default data set, generated once per test session (conftest's shared cache)."""
    return SB.ensure_synthetic_brain(cache_dir)


def test_layout(root: Path):
    assert root.name.startswith("synthetic_")
    assert (root / "README.md").read_text().count("Ground-truth encoding model") == 1
    gt = pd.read_csv(root / "ground_truth.csv")
    assert len(gt) == 96 * 4 + 12 and gt["concept"].nunique() == 96
    for concept, stimulus in zip(gt["concept"], gt["stimulus"]):
        assert re.fullmatch(rf"{re.escape(concept)}_\d\d[bns]\.jpg", stimulus)
        assert (root / "images" / "object_images" / concept / stimulus).is_file()
    with Image.open(root / "images" / "object_images" / gt["concept"][0] / gt["stimulus"][0]) as im:
        assert im.format == "JPEG" and im.size == (64, 64)
    for subject in SB.SUBJECTS:
        for suffix in ("ResponseData.h5", "StimulusMetadata.csv", "VoxelMetadata.csv"):
            assert (root / "fmri" / f"{subject}_{suffix}").is_file()


def test_h5_is_pandas_fixed_format(root: Path):
    vox = pd.read_csv(root / "fmri" / "sub-02_VoxelMetadata.csv")
    meta = pd.read_csv(root / "fmri" / "sub-02_StimulusMetadata.csv")
    n_vox, n_trials = len(vox), len(meta)
    with h5py.File(root / "fmri" / "sub-02_ResponseData.h5", "r") as f:
        assert list(f) == ["ResponseData"]
        g = f["ResponseData"]
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in g.attrs.items()}
        for key, value in {
            "pandas_type": "frame",
            "pandas_version": "0.15.2",
            "encoding": "UTF-8",
            "errors": "strict",
            "ndim": 2,
            "nblocks": 2,
            "axis0_variety": "regular",
            "axis1_variety": "regular",
            "block0_items_variety": "regular",
            "block1_items_variety": "regular",
        }.items():
            assert attrs[key] == value, key
        assert sorted(g) == [
            "axis0",
            "axis1",
            "block0_items",
            "block0_values",
            "block1_items",
            "block1_values",
        ]
        b0, b1 = g["block0_values"], g["block1_values"]
        assert b0.dtype == np.float64 and b0.shape == (n_vox, n_trials)
        assert b1.dtype == np.int64 and b1.shape == (n_vox, 1)
        assert b0.attrs["transposed"] == 1 and b1.attrs["transposed"] == 1
        labels = [str(t) for t in range(n_trials)]
        assert [s.decode() for s in g["axis0"][:]] == ["voxel_id", *labels]
        assert [s.decode() for s in g["block0_items"][:]] == labels
        assert [s.decode() for s in g["block1_items"][:]] == ["voxel_id"]
        assert g["axis0"].attrs["kind"] == b"string" and g["axis1"].attrs["kind"] == b"integer"
        assert np.array_equal(g["axis1"][:], np.arange(n_vox))
        assert np.array_equal(b1[:, 0], vox["voxel_id"])
        assert np.all(np.diff(b1[:, 0]) > 0)


def test_h5_reads_with_pandas(root: Path):
    df = pd.read_hdf(root / "fmri" / "sub-01_ResponseData.h5")
    with h5py.File(root / "fmri" / "sub-01_ResponseData.h5", "r") as f:
        values = f["ResponseData/block0_values"][:]
        ids = f["ResponseData/block1_values"][:, 0]
    assert list(df.columns[:2]) == ["voxel_id", "0"]
    assert np.array_equal(df["voxel_id"].to_numpy(), ids)
    assert np.array_equal(df.drop(columns=["voxel_id"]).to_numpy(), values)


def test_stimulus_metadata(root: Path):
    metas = [pd.read_csv(root / "fmri" / f"{s}_StimulusMetadata.csv") for s in SB.SUBJECTS]
    for k, meta in enumerate(metas, start=1):
        assert list(meta.columns) == [
            "trial_type",
            "session",
            "run",
            "subject_id",
            "trial_id",
            "stimulus",
            "concept",
        ]
        assert np.array_equal(meta["trial_id"], np.arange(len(meta)))
        assert (meta["subject_id"] == k).all()
        assert sorted(meta["session"].unique()) == [1, 2, 3, 4]
        assert sorted(meta["run"].unique()) == [1, 2, 3, 4]
        train, test = meta[meta["trial_type"] == "train"], meta[meta["trial_type"] == "test"]
        # Every session: each concept once (one of its exemplars), each test image once.
        assert (train.groupby(["session", "concept"]).size() == 1).all()
        assert train.groupby("session")["concept"].nunique().eq(96).all()
        assert train["stimulus"].is_unique and len(train) == 96 * 4
        assert test["stimulus"].nunique() == 12 and (test.groupby("stimulus").size() == 4).all()
        assert (test.groupby(["stimulus", "session"]).size() == 1).all()
    # Same images for everyone, in a different order and sessions.
    assert all(set(m["stimulus"]) == set(metas[0]["stimulus"]) for m in metas)
    assert not np.array_equal(metas[0]["stimulus"], metas[1]["stimulus"])
    assert not np.array_equal(metas[1]["stimulus"], metas[2]["stimulus"])


def test_voxel_metadata(root: Path):
    vox = pd.read_csv(root / "fmri" / "sub-03_VoxelMetadata.csv")
    for c in [
        "voxel_id",
        "subject_id",
        "voxel_x",
        "voxel_y",
        "voxel_z",
        "nc_testset",
        "nc_singletrial",
        "splithalf_uncorrected",
        "splithalf_corrected",
        "prf-eccentricity",
        "prf-polarangle",
        "prf-rsquared",
        "prf-size",
        *SB.ROI_COLUMNS,
        *SB.GLASSER_COLUMNS,
    ]:
        assert c in vox.columns, c
    roi = vox[SB.ROI_COLUMNS + SB.GLASSER_COLUMNS]
    assert set(np.unique(roi.to_numpy())) <= {0, 1}
    for name, count in SB.DEFAULT_VOXELS.items():
        if name != "unassigned":
            assert vox[name].sum() == count, name
    primary = ["V1", "V2", "V3", "hV4", "lLOC", "rLOC", "IT"]
    assert (vox[primary].sum(axis=1) == 0).sum() == SB.DEFAULT_VOXELS["unassigned"]
    assert vox["voxel_id"].is_unique
    # Reliability reflects signal: ROI voxels beat voxels that carry only noise.
    in_roi = vox[primary].sum(axis=1) > 0
    assert vox.loc[in_roi, "nc_testset"].median() > vox.loc[~in_roi, "nc_testset"].median() + 10


def test_deterministic_and_cached(tmp_path: Path):
    a = SB.ensure_synthetic_brain(tmp_path / "a", **SMALL)
    b = SB.ensure_synthetic_brain(tmp_path / "b", **SMALL)
    c = SB.ensure_synthetic_brain(tmp_path / "a", **{**SMALL, "seed": 1})
    assert a.name == b.name and a != c

    def values(r: Path) -> np.ndarray:
        with h5py.File(r / "fmri" / "sub-01_ResponseData.h5", "r") as f:
            return f["ResponseData/block0_values"][:]

    assert np.array_equal(values(a), values(b))
    assert not np.array_equal(values(a), values(c))
    assert (a / "ground_truth.csv").read_text() == (b / "ground_truth.csv").read_text()
    t = time.perf_counter()
    assert SB.ensure_synthetic_brain(tmp_path / "a", **SMALL) == a
    assert time.perf_counter() - t < 0.5


def test_concurrent_callers_share_one_result(tmp_path: Path):
    with ThreadPoolExecutor(2) as pool:
        paths = list(pool.map(lambda _: SB.ensure_synthetic_brain(tmp_path, **SMALL), range(2)))
    assert paths[0] == paths[1]
    assert [p.name for p in tmp_path.iterdir()] == [paths[0].name]  # no temp folders left
    assert (paths[0] / "fmri" / "sub-03_VoxelMetadata.csv").is_file()


def test_bad_parameters(tmp_path: Path):
    with pytest.raises(ValueError, match="unknown ROIs"):
        SB.ensure_synthetic_brain(tmp_path, voxels={"V7": 3})
    with pytest.raises(ValueError, match="n_test"):
        SB.ensure_synthetic_brain(tmp_path, n_concepts=10, n_test=11)
    assert list(tmp_path.iterdir()) == []


def test_ground_truth_features_errors():
    images = np.zeros((2, 16, 16, 3))
    meta = pd.DataFrame({"class": ["circle", "star"], "scale": [0.5, 0.6]})
    with pytest.raises(ValueError, match="unknown ground-truth ROI"):
        SB.ground_truth_features(images, meta, "V5")
    with pytest.raises(ValueError, match=r"lacks columns \['x', 'y'\]"):
        SB.ground_truth_features(images, meta, "LOC")
    with pytest.raises(ValueError, match="n = len"):
        SB.ground_truth_features(images[:1], meta, "V1")


def test_each_roi_matches_its_own_ground_truth_best(root: Path):
    """The generator is what it claims: the RDM of ROI r's ground-truth features, computed from the
    saved JPEGs of the exemplar01 images, matches r's brain RDM better than any other ROI's."""
    patterns = load_brain_patterns(root / "fmri", SB.SUBJECTS, ROIS, "exemplar01", "all")
    gt = pd.read_csv(root / "ground_truth.csv").set_index("stimulus")
    files = [paths[0] for paths in patterns.image_relpaths]
    meta = gt.loc[[f.split("/")[1] for f in files]].reset_index()
    images = np.stack(
        [
            np.asarray(Image.open(root / "images" / "object_images" / f).convert("RGB")) / 255.0
            for f in files
        ]
    )
    brain = {r: [correlation_rdm(p) for p in patterns.patterns[r]] for r in ROIS}
    score = np.zeros((len(ROIS), len(ROIS)))
    for i, r in enumerate(ROIS):
        model = correlation_rdm(SB.ground_truth_features(images, meta, r))
        for j, b in enumerate(ROIS):
            score[i, j] = np.mean([spearman(model, rdm) for rdm in brain[b]])
    table = pd.DataFrame(score, index=list(ROIS), columns=list(ROIS)).round(3)
    for i, r in enumerate(ROIS):
        others = np.delete(score[i], i)
        assert score[i, i] > others.max() + 0.05, f"{r}:\n{table}"
        assert score[i, i] > 0.3, f"{r}:\n{table}"


@pytest.mark.parametrize("seed", [0, 1])
def test_untrained_early_layers_match_v1_on_the_quickstart(cache_dir: Path, seed: int):
    """The embedded default tells the study's kind of story at epoch 0: the untrained network's
    global-average-pooled conv1 matches the synthetic V1 measurably (real V1: rho about 0.10),
    through the luminance channel of the early ROIs (oriented energy alone gave rho about 0)."""
    import torch

    from snnrsa.rules import build_network, make_rule
    from snnrsa.run.evaluation import checkpoint_scores, load_eval_set, set_mode

    from conftest import typed_cfg

    cfg = typed_cfg([f"seed={seed}", f"brain.cache_dir={cache_dir}"])  # experiment=quickstart
    evalset = load_eval_set(cfg)
    torch.manual_seed(seed)
    net = build_network(cfg, 10)
    rule = make_rule(cfg.rule, net, n_epochs=max(cfg.checkpoints))
    set_mode(net, False)
    rows = pd.DataFrame(checkpoint_scores(rule, cfg, evalset, torch.device("cpu"))[1])
    rho = rows.groupby(["layer", "roi"])["rho"].mean()
    assert rho["conv1", "V1"] >= 0.05, rho.unstack()

"""brain=things end to end: the brain-RDM cache, image checks, and every bad-input policy."""

import logging
import shutil
import sys
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from snnrsa.brain import load_brain
from snnrsa.config import ThingsBrainConfig
from snnrsa.data import rdm_cache, things, things_responses
from snnrsa.data.synthetic_brain import SUBJECTS, ensure_synthetic_brain, write_response_h5
from snnrsa.rsa import correlation_rdm

SMALL = {
    "n_concepts": 10,
    "n_sessions": 2,
    "runs_per_session": 2,
    "n_test": 2,
    "image_size": 32,
    "voxels": {"V1": 12, "IT": 8, "lLOC": 4, "unassigned": 5},
}
ROIS = {"V1": ["V1"], "IT": ["IT"], "LOC": ["lLOC", "rLOC"]}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return ensure_synthetic_brain(tmp_path_factory.mktemp("things_src"), **SMALL)


@pytest.fixture
def data(source: Path, tmp_path: Path) -> Path:
    """A private copy of the small set (tests modify its files)."""
    return Path(shutil.copytree(source, tmp_path / "data"))


def _cfg(data: Path, **kw) -> ThingsBrainConfig:
    kw.setdefault("cache_dir", str(data / "cache"))
    return ThingsBrainConfig(
        fmri_dir=str(data / "fmri"),
        images_dir=str(data / "images"),
        rois=dict(ROIS),
        resolution=32,
        **kw,
    )


def _cache_files(data: Path) -> list[Path]:
    folder = data / "cache" / rdm_cache.FOLDER
    return sorted(folder.iterdir()) if folder.is_dir() else []


@pytest.fixture
def opened(monkeypatch) -> list[str]:
    """Names of every file h5py opens from now on."""
    names: list[str] = []
    original = h5py.File

    def spy(name, *args, **kwargs):
        names.append(Path(name).name)
        return original(name, *args, **kwargs)

    monkeypatch.setattr(h5py, "File", spy)
    return names


def _responses(data: Path, subject: str) -> np.ndarray:
    with h5py.File(data / "fmri" / f"{subject}_ResponseData.h5", "r") as f:
        return f["ResponseData/block0_values"][()]


def _rewrite(data: Path, subject: str, values: np.ndarray) -> None:
    ids = pd.read_csv(data / "fmri" / f"{subject}_VoxelMetadata.csv")["voxel_id"].to_numpy()
    write_response_h5(data / "fmri" / f"{subject}_ResponseData.h5", values, ids)


def _roi_rows(data: Path, subject: str, column: str) -> np.ndarray:
    return np.flatnonzero(pd.read_csv(data / "fmri" / f"{subject}_VoxelMetadata.csv")[column])


def test_matches_the_reader_and_second_call_reads_no_responses(data: Path, opened: list[str]):
    brain = load_brain(_cfg(data))
    pats = things.load_brain_patterns(data / "fmri", SUBJECTS, ROIS, "exemplar01", "all")
    assert brain.subjects == SUBJECTS and brain.stimuli == pats.stimuli and brain.rois == list(ROIS)
    for roi in ROIS:
        expected = np.stack([correlation_rdm(p) for p in pats.patterns[roi]])
        np.testing.assert_allclose(brain.rdms[roi], expected, rtol=0, atol=1e-12)
    assert np.array_equal(brain.sessions, pats.sessions)
    assert np.array_equal(brain.fmri_runs, pats.fmri_runs)
    assert all(p.is_file() for paths in brain.image_paths for p in paths)
    entries = _cache_files(data)
    assert len(entries) == len(SUBJECTS) * len(ROIS)
    assert not [p for p in entries if not p.name.endswith(".h5") or p.name.startswith(".")]
    with h5py.File(entries[0], "r") as f:
        assert {"rdm", "names", "relpaths_json", "sessions", "runs"} <= set(f)
        assert f.attrs["n_voxels"] > 0 and '"selection": "exemplar01"' in f.attrs["inputs"]

    opened.clear()
    again = load_brain(_cfg(data))
    assert not [n for n in opened if n.endswith("ResponseData.h5")], opened
    assert again.stimuli == brain.stimuli and again.image_paths == brain.image_paths
    for roi in ROIS:
        assert np.array_equal(again.rdms[roi], brain.rdms[roi])
    assert np.array_equal(again.sessions, brain.sessions)


def test_cache_misses_when_an_input_changes(data: Path, opened: list[str]):
    load_brain(_cfg(data))
    n = len(_cache_files(data))
    for change in ({"zscore": "session"}, {"min_reliability": 0.0}, {"selection": "test100"}):
        opened.clear()
        load_brain(_cfg(data, **change))
        assert "sub-01_ResponseData.h5" in opened, change
        assert len(_cache_files(data)) == n + len(SUBJECTS) * len(ROIS), change
        n = len(_cache_files(data))
    path = data / "fmri" / "sub-02_VoxelMetadata.csv"
    path.write_text(path.read_text())  # new mtime: sub-02's entries are stale
    opened.clear()
    load_brain(_cfg(data))
    assert [n for n in opened if n.endswith("ResponseData.h5")] == ["sub-02_ResponseData.h5"]


def test_cache_location_default_and_fallback(data: Path, tmp_path: Path, monkeypatch):
    fmri = data / "fmri"
    assert rdm_cache.resolve_cache_dir(None, fmri) == fmri / rdm_cache.FOLDER
    shutil.rmtree(fmri / rdm_cache.FOLDER)
    (fmri / rdm_cache.FOLDER).write_text("in the way")  # the data folder cannot take the cache
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = tmp_path / "home" / ".cache" / "snnrsa" / rdm_cache.FOLDER
    assert rdm_cache.resolve_cache_dir(None, fmri) == expected and expected.is_dir()


def test_cache_writes_are_atomic(tmp_path: Path, monkeypatch, caplog):
    cache = rdm_cache.RdmCache(tmp_path)
    n = 50
    entry = rdm_cache.RdmEntry(
        rdm=np.ones((n, n)) - np.eye(n),
        names=[f"s{i}.jpg" for i in range(n)],
        relpaths=[[f"c/s{i}.jpg"] for i in range(n)],
        sessions=np.ones(n, int),
        fmri_runs=np.arange(n),
        n_voxels=7,
        n_dropped=1,
    )

    def writer() -> None:
        for _ in range(10):
            cache.put("sub-01", "k", entry, {"x": 1})
            got = cache.get("sub-01", "k")
            assert got is not None and np.array_equal(got.rdm, entry.rdm)

    with ThreadPoolExecutor(4) as pool:
        for job in [pool.submit(writer) for _ in range(4)]:
            job.result()  # re-raises a failed writer's error
    assert [p.name for p in tmp_path.iterdir()] == ["sub-01-k.h5"]
    got = cache.get("sub-01", "k")
    assert got.names == entry.names and got.relpaths == entry.relpaths and got.n_dropped == 1

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(h5py.Group, "create_dataset", fail)
    with pytest.raises(OSError, match="disk full"):
        cache.put("sub-02", "k", entry, {})
    assert [p.name for p in tmp_path.iterdir()] == ["sub-01-k.h5"]
    monkeypatch.undo()
    (tmp_path / "sub-01-k.h5").write_bytes(b"truncated")
    with caplog.at_level(logging.WARNING):
        assert cache.get("sub-01", "k") is None
    assert "unreadable entry" in caplog.text and "sub-01-k.h5" in caplog.text


def test_wrong_or_missing_paths(data: Path):
    for key in ("fmri_dir", "images_dir"):
        cfg = _cfg(data)
        setattr(cfg, key, str(data / "nowhere"))
        with pytest.raises(FileNotFoundError, match=rf"brain.{key}=.*nowhere: no such folder"):
            load_brain(cfg)
    (data / "fmri" / "sub-03_VoxelMetadata.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"sub-03: .*sub-03_VoxelMetadata.csv"):
        load_brain(_cfg(data))
    assert _cache_files(data) == []


def test_missing_images_fail_before_responses_are_read(data: Path, opened: list[str]):
    gone = sorted((data / "images" / "object_images").glob("*/*_01?.jpg"))[:3]
    for p in gone:
        p.unlink()
    with pytest.raises(FileNotFoundError) as err:
        load_brain(_cfg(data))
    msg = str(err.value)
    assert "brain.images_dir=" in msg and "3 of 10 stimulus images are missing" in msg
    assert str(gone[0]) in msg
    assert not [n for n in opened if n.endswith("ResponseData.h5")] and _cache_files(data) == []


def test_h5_without_float_block_or_with_wrong_trial_count(data: Path):
    values = _responses(data, "sub-02")
    _rewrite(data, "sub-02", values[:, :-1])
    with pytest.raises(ValueError, match=rf"sub-02_ResponseData.h5: .*{values.shape[1]} columns"):
        load_brain(_cfg(data))
    with h5py.File(data / "fmri" / "sub-02_ResponseData.h5", "a") as f:
        del f["ResponseData/block0_values"]
        f["ResponseData/block0_values"] = values.astype(np.int64)
    with pytest.raises(ValueError, match=r"sub-02_ResponseData.h5: expected one float block.*int"):
        load_brain(_cfg(data))
    (data / "fmri" / "sub-02_ResponseData.h5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match=r"sub-02_ResponseData.h5: cannot be opened as HDF5"):
        load_brain(_cfg(data))
    assert not [p for p in _cache_files(data) if "sub-02" in p.name or p.name.startswith(".")]


def test_not_fixed_format_falls_back_to_pandas(data: Path, monkeypatch, caplog):
    values = _responses(data, "sub-01")
    frame = pd.DataFrame(values, columns=[str(i) for i in range(values.shape[1])])
    expected = things.load_brain_patterns(data / "fmri", ["sub-01"], {"IT": ["IT"]})
    path = data / "fmri" / "sub-01_ResponseData.h5"
    with h5py.File(path, "w") as f:  # what a "table"-format frame looks like to h5py
        f.create_group("ResponseData").create_dataset("table", data=np.zeros(3))
    monkeypatch.setitem(sys.modules, "tables", None)  # PyTables absent
    with pytest.raises(ImportError, match=r"sub-01_ResponseData.h5 is not .*PyTables"):
        load_brain(_cfg(data))
    monkeypatch.setitem(sys.modules, "tables", types.ModuleType("tables"))
    monkeypatch.setattr(things.pd, "read_hdf", lambda p: frame.assign(voxel_id=1))
    with caplog.at_level(logging.WARNING):
        brain = load_brain(_cfg(data))
    assert "falling back to pandas.read_hdf" in caplog.text
    np.testing.assert_allclose(
        brain.rdms["IT"][0], correlation_rdm(expected.patterns["IT"][0]), atol=1e-12
    )


def test_metadata_missing_a_column(data: Path):
    path = data / "fmri" / "sub-03_StimulusMetadata.csv"
    original = path.read_text()
    pd.read_csv(path).drop(columns=["run"]).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"sub-03_StimulusMetadata.csv: missing columns \['run'\]"):
        load_brain(_cfg(data))
    path.write_text(original)
    path = data / "fmri" / "sub-01_VoxelMetadata.csv"
    pd.read_csv(path).drop(columns=["nc_testset"]).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"sub-01_VoxelMetadata.csv: missing column 'nc_testset'"):
        load_brain(_cfg(data, min_reliability=20.0))
    assert _cache_files(data) == []


def test_roi_name_not_in_metadata(data: Path):
    cfg = _cfg(data)
    cfg.rois = {"FFA": ["FFA"]}
    with pytest.raises(
        ValueError, match=r"sub-01_VoxelMetadata.csv: unknown ROI columns \['FFA'\]"
    ):
        load_brain(cfg)


def test_reliability_threshold(data: Path):
    cfg = _cfg(data, min_reliability=40.0)
    cfg.rois = {"V1": ["V1"]}  # at 40, LOC and IT keep a single voxel for some subjects
    load_brain(cfg)
    vox = pd.read_csv(data / "fmri" / "sub-01_VoxelMetadata.csv")
    key, _ = rdm_cache.cache_key(
        list(things.subject_files(data / "fmri", "sub-01").values()),
        columns=["V1"],
        selection="exemplar01",
        zscore="all",
        min_reliability=40.0,
        on_nonfinite="drop",
    )
    entry = rdm_cache.RdmCache(data / "cache" / rdm_cache.FOLDER).get("sub-01", key)
    assert 0 < entry.n_voxels == ((vox["V1"] == 1) & (vox["nc_testset"] >= 40)).sum() < 12
    with pytest.raises(ValueError, match=r"sub-01: ROI 'V1' \(V1\) has no voxels with nc_testset"):
        load_brain(_cfg(data, min_reliability=1000.0))


def test_roi_empty_for_one_subject(data: Path, caplog):
    path = data / "fmri" / "sub-02_VoxelMetadata.csv"
    vox = pd.read_csv(path)
    vox["IT"] = 0
    vox.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"sub-02: ROI 'IT' \(IT\) has no voxels in .*sub-02_Vox"):
        load_brain(_cfg(data))
    assert not [p for p in _cache_files(data) if "sub-02" in p.name or p.name.startswith(".")]
    with caplog.at_level(logging.WARNING):
        brain = load_brain(_cfg(data, on_empty_roi="skip"))
    assert "sub-02: ROI 'IT' (IT) has no voxels" in caplog.text and "dropping 'IT'" in caplog.text
    assert brain.rois == ["V1", "LOC"] and brain.subjects == SUBJECTS
    assert all(r.shape[0] == 3 and np.isfinite(r).all() for r in brain.rdms.values())
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # the cached empty entry gives the same result
        assert load_brain(_cfg(data, on_empty_roi="skip")).rois == ["V1", "LOC"]
    assert "sub-02: ROI 'IT'" in caplog.text
    with pytest.raises(ValueError, match=r"sub-02: ROI 'IT'"):
        load_brain(_cfg(data))


def test_nonfinite_betas(data: Path, caplog):
    values = _responses(data, "sub-03")
    v1, it = _roi_rows(data, "sub-03", "V1"), _roi_rows(data, "sub-03", "IT")
    values[v1[:2], 5] = np.nan
    values[it[0], 0] = np.inf
    _rewrite(data, "sub-03", values)
    with pytest.raises(ValueError, match=r"sub-03: .*sub-03_ResponseData.h5 has NaN/inf") as err:
        load_brain(_cfg(data, on_nonfinite="fail"))
    assert "{'V1': 2, 'IT': 1}" in str(err.value)
    assert not [p for p in _cache_files(data) if "sub-03" in p.name or p.name.startswith(".")]
    with caplog.at_level(logging.WARNING):
        brain = load_brain(_cfg(data))
    assert "sub-03: dropped voxels with NaN/inf betas" in caplog.text
    assert "{'V1': 2, 'IT': 1}" in caplog.text
    assert all(np.isfinite(r).all() for r in brain.rdms.values())
    keep = np.setdiff1d(v1, v1[:2])
    sc = things.read_conditions(data / "fmri", "sub-03", "exemplar01")
    z = things_responses._zscore(values[keep].copy(), "all", sc.meta["session"].to_numpy())
    expected = correlation_rdm(np.stack([z[:, t].mean(1) for t in sc.cond.trials]))
    order = [sc.cond.names.index(s) for s in brain.stimuli]
    np.testing.assert_allclose(brain.rdms["V1"][2], expected[np.ix_(order, order)], atol=1e-12)


def test_nonfinite_outside_the_used_trials_is_kept_without_zscoring(data: Path):
    sc = things.read_conditions(data / "fmri", "sub-01", "exemplar01")
    unused = np.setdiff1d(np.arange(len(sc.meta)), np.concatenate(sc.cond.trials))[0]
    values = _responses(data, "sub-01")
    values[_roi_rows(data, "sub-01", "V1")[0], unused] = np.nan
    _rewrite(data, "sub-01", values)
    pats = things.load_brain_patterns(
        data / "fmri", ["sub-01"], {"V1": ["V1"]}, "exemplar01", "none", on_nonfinite="fail"
    )
    assert pats.patterns["V1"][0].shape[1] == 12
    with pytest.raises(ValueError, match=r"\{'V1': 1\}"):
        things.load_brain_patterns(
            data / "fmri", ["sub-01"], {"V1": ["V1"]}, "exemplar01", "all", on_nonfinite="fail"
        )


def test_bad_policy_values(data: Path):
    for key, value in (("on_empty_roi", "ignore"), ("on_nonfinite", "zero"), ("zscore", "run")):
        with pytest.raises(ValueError, match=rf"unknown {key} '{value}'"):
            load_brain(_cfg(data, **{key: value}))
    assert _cache_files(data) == []

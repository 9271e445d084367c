"""The THINGS-fMRI reader: name alignment, z-scoring, rows-only reading, selections, errors."""

import logging
import re
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from snnrsa.data import things_responses
from snnrsa.data.synthetic_brain import ROI_COLUMNS, write_response_h5
from snnrsa.data.things import load_brain_patterns, select_conditions

from conftest import SHARED, needs_shared

THINGS_META = SHARED / "things_meta"
CONCEPTS = ["cat", "apple", "bee"]
TEST_IMAGES = ["bee_05s.jpg", "apple_06n.jpg"]
N_SESSIONS, N_VOX = 3, 9
ROI_OF_ROW = ["V1", "IT", "V1", "", "lLOC", "V1", "rLOC", "IT", ""]  # "" = no ROI
ROIS = {"V1": ["V1"], "LOC": ["lLOC", "rLOC"], "IT": ["IT"]}


def _trials(rng: np.random.Generator) -> pd.DataFrame:
    """One subject's trials: every session shows one exemplar per concept and each test image."""
    rows = []
    for s in range(1, N_SESSIONS + 1):
        shown = [(f"{c}_{s:02d}b.jpg", c, "train") for c in CONCEPTS]
        shown += [(t, t.split("_")[0], "test") for t in TEST_IMAGES]
        for j, k in enumerate(rng.permutation(len(shown))):
            stim, concept, kind = shown[k]
            rows.append((kind, s, 1 + j % 2, 1, stim, concept))
    meta = pd.DataFrame(
        rows, columns=["trial_type", "session", "run", "subject_id", "stimulus", "concept"]
    )
    meta.insert(4, "trial_id", np.arange(len(meta)))
    return meta


def _value_table() -> dict[tuple[str, int], np.ndarray]:
    """Response of every voxel to each (stimulus, session): subject-independent by design."""
    rng = np.random.default_rng(42)
    keys = [(f"{c}_{s:02d}b.jpg", s) for c in CONCEPTS for s in range(1, N_SESSIONS + 1)]
    keys += [(t, s) for t in TEST_IMAGES for s in range(1, N_SESSIONS + 1)]
    scale = rng.uniform(0.5, 3, N_VOX)
    return {k: 5 + scale * rng.standard_normal(N_VOX) for k in keys}


def _write_subject(folder: Path, subject: str, seed: int, roi_of_row=ROI_OF_ROW) -> np.ndarray:
    meta = _trials(np.random.default_rng(seed))
    table = _value_table()
    responses = np.stack([table[(s, k)] for s, k in zip(meta["stimulus"], meta["session"])], 1)
    write_response_h5(folder / f"{subject}_ResponseData.h5", responses, np.arange(N_VOX) * 3)
    meta.to_csv(folder / f"{subject}_StimulusMetadata.csv", index=False)
    vox = pd.DataFrame({"voxel_id": np.arange(N_VOX) * 3, "subject_id": 1})
    for col in ROI_COLUMNS:
        vox[col] = [int(r == col) for r in roi_of_row]
    vox.to_csv(folder / f"{subject}_VoxelMetadata.csv", index=False)
    return responses


@pytest.fixture
def fmri(tmp_path: Path) -> Path:
    _write_subject(tmp_path, "sub-01", seed=1)
    _write_subject(tmp_path, "sub-02", seed=2)
    return tmp_path


def _rows(roi: str) -> np.ndarray:
    return np.flatnonzero([r in ROIS[roi] for r in ROI_OF_ROW])


def _hand_zscore(x: np.ndarray, sessions: np.ndarray | None) -> np.ndarray:
    out = np.empty_like(x)
    groups = (
        [np.ones(x.shape[1], bool)]
        if sessions is None
        else [sessions == s for s in np.unique(sessions)]
    )
    for g in groups:
        out[:, g] = (x[:, g] - x[:, g].mean(1, keepdims=True)) / x[:, g].std(1, keepdims=True)
    return out


def test_orders_differ_but_patterns_align(fmri: Path):
    m1 = pd.read_csv(fmri / "sub-01_StimulusMetadata.csv")
    m2 = pd.read_csv(fmri / "sub-02_StimulusMetadata.csv")
    assert not np.array_equal(m1["stimulus"], m2["stimulus"])
    for selection in ("exemplar01", "concept_mean", "test100"):
        for zscore in ("none", "all", "session"):
            bp = load_brain_patterns(fmri, ["sub-01", "sub-02"], ROIS, selection, zscore)
            for roi in ROIS:
                a, b = bp.patterns[roi]
                assert a.shape == (len(bp.stimuli), len(_rows(roi)))
                np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_exemplar01_against_hand_computation(fmri: Path):
    raw = _write_subject(fmri, "sub-01", seed=1)
    meta = pd.read_csv(fmri / "sub-01_StimulusMetadata.csv")
    bp = load_brain_patterns(fmri, ["sub-01", "sub-02"], ROIS, "exemplar01", "none")
    assert bp.stimuli == ["apple_01b.jpg", "bee_01b.jpg", "cat_01b.jpg"]  # concept order
    assert bp.image_relpaths == [["apple/apple_01b.jpg"], ["bee/bee_01b.jpg"], ["cat/cat_01b.jpg"]]
    assert bp.subjects == ["sub-01", "sub-02"]
    trial = [int(np.flatnonzero(meta["stimulus"] == s)[0]) for s in bp.stimuli]
    assert np.array_equal(bp.sessions, np.ones((2, 3), dtype=int))
    assert np.array_equal(bp.fmri_runs[0], meta["run"].to_numpy()[trial])
    for zscore, sessions in (("none", None), ("all", None), ("session", meta["session"])):
        bp = load_brain_patterns(fmri, ["sub-01"], ROIS, "exemplar01", zscore)
        x = (
            raw
            if zscore == "none"
            else _hand_zscore(raw, None if sessions is None else sessions.to_numpy())
        )
        for roi in ROIS:
            expected = x[_rows(roi)][:, trial].T
            np.testing.assert_allclose(bp.patterns[roi][0], expected, rtol=1e-12, atol=1e-12)
    assert not np.allclose(
        load_brain_patterns(fmri, ["sub-01"], ROIS, "exemplar01", "all").patterns["V1"][0],
        load_brain_patterns(fmri, ["sub-01"], ROIS, "exemplar01", "session").patterns["V1"][0],
    )


def test_concept_mean_and_test100(fmri: Path):
    raw = _write_subject(fmri, "sub-01", seed=1)
    meta = pd.read_csv(fmri / "sub-01_StimulusMetadata.csv")
    z = _hand_zscore(raw, None)
    bp = load_brain_patterns(fmri, ["sub-01", "sub-02"], ROIS, "concept_mean", "all")
    assert bp.stimuli == ["apple", "bee", "cat"]
    assert bp.image_relpaths[0] == [f"apple/apple_{s:02d}b.jpg" for s in (1, 2, 3)]
    assert (bp.sessions == -1).all() and (bp.fmri_runs == -1).all()
    cols = [
        np.flatnonzero((meta["concept"] == c) & (meta["trial_type"] == "train")) for c in bp.stimuli
    ]
    expected = np.stack([z[_rows("IT")][:, c].mean(1) for c in cols])
    np.testing.assert_allclose(bp.patterns["IT"][0], expected, rtol=1e-12)
    bp = load_brain_patterns(fmri, ["sub-01", "sub-02"], ROIS, "test100", "all")
    assert bp.stimuli == sorted(TEST_IMAGES)
    assert bp.image_relpaths == [["apple/apple_06n.jpg"], ["bee/bee_05s.jpg"]]
    cols = [np.flatnonzero(meta["stimulus"] == s) for s in bp.stimuli]
    assert all(len(c) == N_SESSIONS for c in cols)
    expected = np.stack([z[_rows("LOC")][:, c].mean(1) for c in cols])
    np.testing.assert_allclose(bp.patterns["LOC"][0], expected, rtol=1e-12)


def test_reads_only_roi_rows(fmri: Path, monkeypatch):
    calls = []
    original = h5py.Dataset.__getitem__

    def spy(self, key):
        calls.append((self.name, key))
        return original(self, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    load_brain_patterns(fmri, ["sub-01"], {"V1": ["V1"], "IT": ["IT"]}, "exemplar01", "all")
    assert len(calls) == 1, calls  # one read, of the float block only
    name, (rows, cols) = calls[0]
    assert name.endswith("block0_values") and cols == slice(None)
    assert list(rows) == [0, 1, 2, 5, 7]  # V1 and IT rows, sorted, nothing else


def test_chunked_reads_give_the_same_patterns(fmri: Path, monkeypatch):
    """Rows are read a chunk at a time (bounded memory); the result must not depend on it."""
    whole = {
        (sel, z): load_brain_patterns(fmri, ["sub-01", "sub-02"], ROIS, sel, z)
        for sel in ("exemplar01", "concept_mean", "test100")
        for z in ("none", "all", "session")
    }
    calls = []
    original = h5py.Dataset.__getitem__

    def spy(self, key):
        calls.append(list(key[0]))
        return original(self, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    monkeypatch.setattr(things_responses, "CHUNK_BYTES", 8 * 15 * 2)  # two rows of 15 trials per read
    for (sel, z), expected in whole.items():
        calls.clear()
        got = load_brain_patterns(fmri, ["sub-01", "sub-02"], ROIS, sel, z)
        for roi in ROIS:
            for a, b in zip(got.patterns[roi], expected.patterns[roi]):
                np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    assert all(len(c) <= 2 and c == sorted(c) for c in calls)
    assert sorted(r for c in calls[:4] for r in c) == [
        0,
        1,
        2,
        4,
        5,
        6,
        7,
    ]  # sub-01: every ROI row once


def test_empty_roi_skip_drops_it_for_all_subjects(fmri: Path, caplog):
    _write_subject(fmri, "sub-02", seed=2, roi_of_row=[r.replace("IT", "") for r in ROI_OF_ROW])
    with caplog.at_level(logging.WARNING):
        bp = load_brain_patterns(fmri, ["sub-01", "sub-02"], ROIS, on_empty_roi="skip")
    assert list(bp.patterns) == ["V1", "LOC"] and all(len(p) == 2 for p in bp.patterns.values())
    assert "sub-02: ROI 'IT' (IT) has no voxels" in caplog.text


def test_missing_files(fmri: Path):
    (fmri / "sub-02_ResponseData.h5").unlink()
    with pytest.raises(FileNotFoundError, match="sub-02_ResponseData.h5"):
        load_brain_patterns(fmri, ["sub-01", "sub-02"], ROIS)
    with pytest.raises(FileNotFoundError, match="sub-03_StimulusMetadata.csv"):
        load_brain_patterns(fmri, ["sub-03"], ROIS)


def test_no_float_block_with_the_trial_count(fmri: Path):
    with h5py.File(fmri / "sub-01_ResponseData.h5", "r") as f:
        values = f["ResponseData/block0_values"][:]
    write_response_h5(fmri / "sub-01_ResponseData.h5", values[:, :-1], np.arange(N_VOX))
    with pytest.raises(ValueError, match=r"sub-01_ResponseData.h5.*one float block with 15 col"):
        load_brain_patterns(fmri, ["sub-01"], ROIS)


def test_missing_metadata_columns(fmri: Path):
    path = fmri / "sub-01_StimulusMetadata.csv"
    pd.read_csv(path).drop(columns=["session"]).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"sub-01_StimulusMetadata.csv: missing columns \['sess"):
        load_brain_patterns(fmri, ["sub-01"], ROIS)


def test_unknown_roi_column(fmri: Path):
    with pytest.raises(ValueError, match=r"VoxelMetadata.csv: unknown ROI columns \['LOC'\]"):
        load_brain_patterns(fmri, ["sub-01"], {"LOC": ["LOC"]})


def test_empty_roi_names_subject_and_roi(fmri: Path):
    _write_subject(fmri, "sub-02", seed=2, roi_of_row=[r.replace("IT", "") for r in ROI_OF_ROW])
    load_brain_patterns(fmri, ["sub-01"], ROIS)  # sub-01 has IT voxels
    with pytest.raises(ValueError, match=r"sub-02: ROI 'IT' \(IT\) has no voxels"):
        load_brain_patterns(fmri, ["sub-01", "sub-02"], ROIS)


def test_subject_lacking_stimuli(fmri: Path):
    path = fmri / "sub-02_StimulusMetadata.csv"
    meta = pd.read_csv(path)
    meta["stimulus"] = meta["stimulus"].replace("bee_05s.jpg", "bee_07s.jpg")
    meta.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"sub-02: .*missing \['bee_05s.jpg'\]"):
        load_brain_patterns(fmri, ["sub-01", "sub-02"], ROIS, "test100")


def test_bad_options(fmri: Path):
    with pytest.raises(ValueError, match="unknown selection"):
        load_brain_patterns(fmri, ["sub-01"], ROIS, selection="exemplar1")
    with pytest.raises(ValueError, match="unknown zscore"):
        load_brain_patterns(fmri, ["sub-01"], ROIS, zscore="run")


@needs_shared(THINGS_META)
def test_exemplar01_reproduces_the_720_list():
    """On the release's image lists, exemplar01 gives exactly the study's 720 stimuli."""
    rows = []
    for kind, name in (
        ("train", "thingsfmri_exp_images.txt"),
        ("test", "thingsfmri_test_images.txt"),
    ):
        for line in (THINGS_META / name).read_text().split():
            stimulus = line.split("/")[-1]
            concept = re.fullmatch(r"(.+)_\d+[a-z]\.jpg", stimulus).group(1)
            rows.append((kind, stimulus, concept))
    meta = pd.DataFrame(rows, columns=["trial_type", "stimulus", "concept"])
    meta = meta.sample(frac=1.0, random_state=0).reset_index(drop=True)  # trial order is arbitrary
    expected = (THINGS_META / "thingsfmri_720_stimuli.txt").read_text().split()
    cond = select_conditions(meta, "exemplar01")
    assert len(expected) == 720
    assert cond.names == expected
    assert all(len(t) == 1 for t in cond.trials)

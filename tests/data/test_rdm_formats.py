"""brain=rdm_file reads RDMs in the forms the RSA community stores them (issue 20).

Each form is written here with scipy / h5py / rsatoolbox (synthetic numbers, never third-party
data) and read back through ``load_brain``; the loaded RDMs must equal the numbers written, and the
leave-one-subject-out noise ceiling of the loaded RDMs must equal rsatoolbox's
``boot_noise_ceiling`` (Spearman, the project's comparison) on the same subject RDMs. Malformed
files fail with an RDMFileError that names the file and variable, never a raw exception.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io
from PIL import Image
from rsatoolbox.inference import boot_noise_ceiling
from rsatoolbox.rdm import RDMs
from scipy.stats import spearmanr

from snnrsa.brain import Brain, load_brain
from snnrsa.config import ConfigError
from snnrsa.data.rdm_file import RDMFileError
from snnrsa.rsa import correlation_rdm
from snnrsa.rsa.ceiling import loso_noise_ceiling
from snnrsa.summarize import noise_ceilings

from conftest import typed_cfg

REPO = Path(__file__).resolve().parents[2]
N_IMG, N_SUBJ, N_SESS = 8, 4, 2
IU = np.triu_indices(N_IMG, 1)


def session_rdms(seed: int = 0) -> np.ndarray:
    """(subjects, sessions, n, n) float32 correlation-distance RDMs: a shared structure plus
    subject and session noise, so that the noise ceiling is neither 0 nor 1."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=(N_IMG, 30))
    out = np.empty((N_SUBJ, N_SESS, N_IMG, N_IMG), dtype=np.float32)
    for s in range(N_SUBJ):
        subj = truth + 0.5 * rng.normal(size=truth.shape)
        for t in range(N_SESS):
            out[s, t] = correlation_rdm(subj + 0.5 * rng.normal(size=truth.shape))
            np.fill_diagonal(out[s, t], 0.0)
    return out


def images(root: Path) -> list[str]:
    rng = np.random.default_rng(1)
    (root / "stim").mkdir(exist_ok=True)
    names = [f"img_{i:02d}.png" for i in range(N_IMG)]
    for name in names:
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / "stim" / name)
    return names


def brain_of(root: Path, path: str, rois: str, *extra: str) -> Brain:
    cfg = typed_cfg(["brain=rdm_file", f"brain.root={root}", f"brain.path={path}",
                     "brain.images_dir=stim", "brain.image_glob=*.png", f"++brain.rois={rois}",
                     *extra])
    return load_brain(cfg.brain)


def assert_ceiling_matches_rsatoolbox(subject_rdms: np.ndarray, brain_rdms: np.ndarray) -> None:
    """The project's LOSO ceiling of the loaded RDMs equals rsatoolbox's on the written ones."""
    reference = boot_noise_ceiling(RDMs(subject_rdms.astype(np.float64)[:, IU[0], IU[1]]),
                                   method="spearman")
    ours = loso_noise_ceiling(brain_rdms, "spearman")
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-10)
    assert 0.05 < ours[0] < ours[1] < 1.0  # a ceiling that could fail, not a degenerate one


def matlab_struct(rdms: np.ndarray, roi: str, condensed: bool = False) -> np.ndarray:
    """A 1 x subjects x sessions RSA-toolbox struct array (RDM, name, color)."""
    st = np.empty((1, N_SUBJ, N_SESS), dtype=[("RDM", "O"), ("name", "O"), ("color", "O")])
    for s in range(N_SUBJ):
        for t in range(N_SESS):
            rdm = rdms[s, t][IU][None] if condensed else rdms[s, t]
            st[0, s, t] = (rdm, f"{roi} | S{s + 1}X | Session: {t + 1}", np.array([[1.0, 0, 0]]))
    return st


def write_v73_struct(path: Path, variables: dict[str, np.ndarray]) -> None:
    """Struct arrays as MATLAB's save -v7.3 writes them: the variable is a group (MATLAB_class
    'struct', MATLAB_fields), each field a dataset of object references with the MATLAB shape
    reversed, each reference pointing into /#refs#; numeric values stored transposed, char as
    uint16 code points of shape (n_chars, 1); a 512-byte MATLAB header as the HDF5 user block."""
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        for var, st in variables.items():
            group = f.create_group(var)
            group.attrs["MATLAB_class"] = np.bytes_("struct")
            names = st.dtype.names
            group.attrs.create("MATLAB_fields", [np.frombuffer(n.encode(), "S1") for n in names],
                               dtype=h5py.vlen_dtype(np.dtype("S1")))
            for field in names:
                ref_arr = np.empty(st.shape[::-1], dtype=h5py.ref_dtype)
                for idx in np.ndindex(st.shape):
                    value, key = st[idx][field], f"{var}_{field}_{len(refs)}"
                    if isinstance(value, str):
                        ds = refs.create_dataset(key, data=np.array([[ord(c)] for c in value],
                                                                     dtype=np.uint16))
                        ds.attrs["MATLAB_class"] = np.bytes_("char")
                        ds.attrs["MATLAB_int_decode"] = np.int32(2)
                    else:
                        value = np.asarray(value)
                        ds = refs.create_dataset(key, data=value.T)
                        ds.attrs["MATLAB_class"] = np.bytes_(
                            "single" if value.dtype == np.float32 else "double")
                    ref_arr[idx[::-1]] = ds.ref
                group.create_dataset(field, data=ref_arr)
    header = (b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Sun Dec  6 00:00:00 2026 "
              b"HDF5 schema 1.00 .")
    with open(path, "r+b") as fh:
        fh.write(header.ljust(116, b" ") + bytes(8) + b"\x00\x02IM")


# --------------------------------------------------------------------------------- the forms

@pytest.mark.parametrize("version", ["v5", "v7.3"])
def test_matlab_struct_array_subjects_by_sessions(tmp_path: Path, version: str) -> None:
    # the layout of rsatoolbox's demos/92imageData/92_brainRDMs.mat: RDMs(1, subject, session)
    rdms, evc = session_rdms(0), session_rdms(5)
    images(tmp_path)
    structs = {"RDMs": matlab_struct(rdms, "hIT"), "EVC_RDMs": matlab_struct(evc, "EVC")}
    if version == "v5":
        scipy.io.savemat(tmp_path / "brain.mat", structs)
    else:
        write_v73_struct(tmp_path / "brain.mat", structs)
        assert h5py.is_hdf5(tmp_path / "brain.mat")
    brain = brain_of(tmp_path, "brain.mat", "{hIT: RDMs, EVC: EVC_RDMs}",
                     "brain.struct_axes=[subject,session]")
    assert brain.subjects == ["S1X", "S2X", "S3X", "S4X"]  # names, less the ROI and session
    assert brain.stimuli == [f"img_{i:02d}.png" for i in range(N_IMG)]
    means = rdms.astype(np.float64).mean(axis=1)
    np.testing.assert_allclose(brain.rdms["hIT"], means, rtol=0, atol=1e-7)
    np.testing.assert_allclose(brain.rdms["EVC"], evc.astype(np.float64).mean(axis=1), atol=1e-7)
    assert brain.session_rdms == {}
    assert_ceiling_matches_rsatoolbox(means, brain.rdms["hIT"])

    kept = brain_of(tmp_path, "brain.mat", "{hIT: RDMs}", "brain.struct_axes=[none,subject,session]",
                    "brain.sessions=separate")
    np.testing.assert_allclose(kept.session_rdms["hIT"], rdms, rtol=0, atol=1e-7)
    np.testing.assert_allclose(kept.rdms["hIT"], means, rtol=0, atol=1e-7)


def test_matlab_struct_array_of_condensed_rdms(tmp_path: Path) -> None:
    # as RDMs_mIT_hIT_fig1: a 1 x k struct array whose RDM fields are 1 x n(n-1)/2 vectors
    rdms = session_rdms(1)[:, 0]
    images(tmp_path)
    st = np.empty((1, N_SUBJ), dtype=[("name", "O"), ("color", "O"), ("RDM", "O")])
    for s in range(N_SUBJ):
        st[0, s] = (f"subject {s + 1}", np.array([[0, 0, 1.0]]), rdms[s][IU][None])
    scipy.io.savemat(tmp_path / "fig1.mat", {"RDMs_fig1": st})
    brain = brain_of(tmp_path, "fig1.mat", "{IT: RDMs_fig1}")
    assert brain.subjects == [f"subject {s + 1}" for s in range(N_SUBJ)]
    np.testing.assert_allclose(brain.rdms["IT"], rdms, rtol=0, atol=1e-7)
    assert_ceiling_matches_rsatoolbox(rdms, brain.rdms["IT"])


@pytest.mark.parametrize("version", ["v5", "v7.3"])
def test_struct_elements_as_rois(tmp_path: Path, version: str) -> None:
    # RDMs_mIT_hIT_fig1's layout: a 1 x 2 struct array of ROIs (name, color, condensed RDM);
    # 'var(k)' picks element k (MATLAB's 1-based linear index)
    rdms = session_rdms(7)[:2, 0]
    images(tmp_path)
    st = np.empty((1, 2), dtype=[("name", "O"), ("color", "O"), ("RDM", "O")])
    for k, roi in enumerate(("mIT", "hIT")):
        st[0, k] = (roi, np.array([[0, 0, 1.0]]), rdms[k][IU][None])
    if version == "v5":
        scipy.io.savemat(tmp_path / "fig1.mat", {"RDMs_fig1": st})
    else:
        write_v73_struct(tmp_path / "fig1.mat", {"RDMs_fig1": st})
    brain = brain_of(tmp_path, "fig1.mat", '{mIT: "RDMs_fig1(1)", hIT: "RDMs_fig1(1,2)"}')
    assert brain.subjects == ["sub-01"]
    np.testing.assert_allclose(brain.rdms["mIT"][0], rdms[0], rtol=0, atol=1e-7)
    np.testing.assert_allclose(brain.rdms["hIT"][0], rdms[1], rtol=0, atol=1e-7)
    with pytest.raises(RDMFileError, match=r"fig1.mat:RDMs_fig1\(3\): index \(3,\) is outside"):
        brain_of(tmp_path, "fig1.mat", '{mIT: "RDMs_fig1(3)"}')


def test_subjects_aligned_by_name_across_rois(tmp_path: Path) -> None:
    rdms = session_rdms(8)[:, 0]
    images(tmp_path)

    def struct(order: list[int], labels: list[str]) -> np.ndarray:
        st = np.empty((1, len(order)), dtype=[("RDM", "O"), ("name", "O")])
        for k, s in enumerate(order):
            st[0, k] = (rdms[s], labels[s])
        return st

    names = [f"S{s}" for s in range(N_SUBJ)]
    scipy.io.savemat(tmp_path / "r.mat", {"A": struct([0, 1, 2, 3], names),
                                          "B": struct([3, 1, 0, 2], names),
                                          "C": struct([0, 1, 2, 3], [f"T{s}" for s in range(4)])})
    brain = brain_of(tmp_path, "r.mat", "{A: A, B: B}")
    assert brain.subjects == names
    np.testing.assert_allclose(brain.rdms["B"], brain.rdms["A"], rtol=0, atol=0)
    with pytest.raises(RDMFileError, match=r"names subjects \['T0'.*brain.subjects"):
        brain_of(tmp_path, "r.mat", "{A: A, C: C}")
    relabelled = brain_of(tmp_path, "r.mat", "{A: A, C: C}", "brain.subjects=[a,b,c,d]")
    assert relabelled.subjects == ["a", "b", "c", "d"]


@pytest.mark.parametrize("form", ["mat_1xm", "npz_subject_pair", "npy_pair_subject"])
def test_condensed_vectors(tmp_path: Path, form: str) -> None:
    rdms = session_rdms(2)[:, 0].astype(np.float64)
    vectors = rdms[:, IU[0], IU[1]]  # (subjects, n(n-1)/2), scipy squareform order
    images(tmp_path)
    if form == "mat_1xm":  # one condensed RDM per variable, 1 x m as MATLAB's squareform gives
        scipy.io.savemat(tmp_path / "v.mat", {f"s{i}": v[None] for i, v in enumerate(vectors)})
        brain = brain_of(tmp_path, "v.mat", "{A: s0, B: s1}")
        np.testing.assert_allclose(brain.rdms["A"][0], rdms[0], rtol=0, atol=0)
        np.testing.assert_allclose(brain.rdms["B"][0], rdms[1], rtol=0, atol=0)
        return
    if form == "npz_subject_pair":
        np.savez(tmp_path / "v.npz", it=vectors)
        brain = brain_of(tmp_path, "v.npz", "{IT: it}", "brain.axis_order='subject,pair'")
    else:
        np.save(tmp_path / "v.npy", vectors.T)
        brain = brain_of(tmp_path, "v.npy", "{IT: v}", "brain.axis_order='pair,subject'")
    np.testing.assert_allclose(brain.rdms["IT"], rdms, rtol=0, atol=0)
    assert_ceiling_matches_rsatoolbox(rdms, brain.rdms["IT"])


@pytest.mark.parametrize("file_type", ["hdf5", "pkl"])
def test_rsatoolbox_rdms_file(tmp_path: Path, file_type: str) -> None:
    rdms = session_rdms(3)
    names = images(tmp_path)
    order = np.random.default_rng(4).permutation(N_IMG)  # the file's patterns in another order
    rows, subj, sess, roi = [], [], [], []
    for r, data in (("IT", rdms), ("EVC", session_rdms(6))):
        for t in range(N_SESS):  # session-major, as concatenated runs often are
            for s in range(N_SUBJ):
                rows.append(data[s, t][np.ix_(order, order)][IU])
                subj.append(f"P{s + 10}")
                sess.append(t + 1)
                roi.append(r)
    obj = RDMs(np.array(rows, dtype=np.float64), dissimilarity_measure="correlation",
               rdm_descriptors={"subject": subj, "session": sess, "roi": roi},
               pattern_descriptors={"stimulus": [Path(names[i]).stem for i in order]})
    path = tmp_path / f"rdms.{file_type}"
    obj.save(str(path), file_type=file_type)
    brain = brain_of(tmp_path, path.name, "{IT: IT, EVC: EVC}")
    assert brain.subjects == [f"P{s + 10}" for s in range(N_SUBJ)]
    assert brain.stimuli == [names[i] for i in order]  # the file's pattern order, stems resolved
    means = rdms.astype(np.float64).mean(axis=1)
    np.testing.assert_allclose(brain.rdms["IT"], means[:, order][:, :, order], rtol=0, atol=1e-12)
    assert_ceiling_matches_rsatoolbox(means, brain.rdms["IT"])
    # brain.images asks for another order: the rows follow the descriptor to it
    listed = "[" + ",".join(names) + "]"
    kept = brain_of(tmp_path, path.name, "{IT: IT}", "brain.sessions=separate",
                    f"brain.images={listed}")
    assert kept.stimuli == names
    np.testing.assert_allclose(kept.rdms["IT"], means, rtol=0, atol=1e-12)
    np.testing.assert_allclose(kept.session_rdms["IT"], rdms, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------- malformed files: errors

def _struct(**fields: object) -> np.ndarray:
    st = np.empty((1, 2), dtype=[(k, "O") for k in fields])
    for i in range(2):
        st[0, i] = tuple(v[i] if isinstance(v, list) else v for v in fields.values())
    return st


def _rdm8(seed: int) -> np.ndarray:
    return session_rdms(seed)[0, 0]


MALFORMED = {
    # case: (variables written with scipy.io.savemat, ROI variable, extra overrides, message)
    "struct_without_RDM_field": ({"R": _struct(name=["a", "b"], D=[_rdm8(0), _rdm8(1)])}, "R", [],
                                 r"struct array 1 x 2 with fields \['D', 'name'\], without an RDM"),
    "RDM_field_not_square": ({"R": _struct(RDM=[np.zeros((3, 4)), np.zeros((3, 4))])}, "R", [],
                             r"R\(1,1\)\.RDM: the RDM field holds shape \(3, 4\)"),
    "condensed_length_not_triangular": ({"v": np.zeros((1, 7))}, "v", [],
                                        "7 values per RDM is not n\\(n-1\\)/2"),
    "struct_axes_needed": ({"R": np.tile(_struct(RDM=[_rdm8(0), _rdm8(1)]), (2, 1))}, "R", [],
                           r"2 x 2 has several axes; name them, e.g. brain.struct_axes"),
    "struct_axes_do_not_fit": ({"R": _struct(RDM=[_rdm8(0), _rdm8(1)])}, "R",
                               ["brain.struct_axes=[subject,session,none]"], "does not fit"),
    "cell_array": ({"C": np.array([[_rdm8(0), _rdm8(1)]], dtype=object)}, "C", [],
                   "C: the variable holds a MATLAB cell array"),
    "text_variable": ({"T": "hello"}, "T", [], "T: the variable holds text"),
    "RDM_sizes_differ": ({"R": _struct(RDM=[_rdm8(0), np.zeros((3, 3))])}, "R", [],
                         r"different sizes \[3, 8\]"),
    "not_symmetric": ({"R": _struct(RDM=[_rdm8(0) + np.triu(np.ones((8, 8)), 1), _rdm8(1)])}, "R",
                      [], "not symmetric"),
    "missing_variable": ({"RDMs": _struct(RDM=[_rdm8(0), _rdm8(1)])}, "hIT", [],
                         r"no variable 'hIT'; found 'RDMs': a MATLAB struct array 1 x 2"),
    "separate_without_sessions": ({"R": _struct(RDM=[_rdm8(0), _rdm8(1)])}, "R",
                                  ["brain.sessions=separate"], r"same number \(>= 2\) of sessions"),
    "wrong_image_count": ({"R": _struct(RDM=[_rdm8(0)[:5, :5], _rdm8(1)[:5, :5]])}, "R", [],
                          "5 x 5 but there are 8 stimulus images"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_mat_files_name_file_variable_and_content(tmp_path: Path, case: str) -> None:
    variables, var, extra, message = MALFORMED[case]
    images(tmp_path)
    scipy.io.savemat(tmp_path / "bad.mat", variables)
    with pytest.raises(RDMFileError, match=message) as err:
        brain_of(tmp_path, "bad.mat", f"{{X: {var}}}", *extra)
    assert "bad.mat" in str(err.value)


@pytest.mark.parametrize("case", ["garbage_mat", "empty_mat", "truncated_mat",
                                  "v73_struct_without_RDM", "v73_missing_variable",
                                  "v73_cell_array", "rsatoolbox_pkl_not_rdms",
                                  "rsatoolbox_hdf5_truncated", "rsatoolbox_unknown_roi",
                                  "unknown_suffix"])
def test_malformed_files_fail_with_a_message(tmp_path: Path, case: str) -> None:
    images(tmp_path)
    name, var, message = {
        "garbage_mat": ("bad.mat", "R", "not a readable MATLAB file"),
        "empty_mat": ("bad.mat", "R", "not a readable MATLAB file"),
        "truncated_mat": ("bad.mat", "R", "not a readable MATLAB file"),
        "v73_struct_without_RDM": ("bad.mat", "R", r"bad.mat:R: holds a MATLAB struct array 1 x 1 with "
                              r"fields \['x'\], without an RDM"),
        "rsatoolbox_pkl_not_rdms": ("bad.pkl", "all", "not a readable rsatoolbox RDMs pkl file"),
        "rsatoolbox_hdf5_truncated": ("bad.hdf5", "all", "not a readable rsatoolbox RDMs hdf5"),
        "rsatoolbox_unknown_roi": ("bad.hdf5", "V1", r"no RDM has roi descriptor 'V1'; roi values "
                                   r"are \['IT'\]"),
        "unknown_suffix": ("bad.csv", "R", "unsupported RDM file type '.csv'"),
        "v73_missing_variable": ("bad.mat", "hIT", r"no variable 'hIT'; found 'RDMs': a MATLAB "
                                 r"struct array 1 x 2 with fields \['RDM', 'name'\]"),
        "v73_cell_array": ("bad.mat", "C", "bad.mat:C: the variable holds a MATLAB cell array"),
    }[case]
    path = tmp_path / name
    if case == "garbage_mat" or case == "unknown_suffix":
        path.write_bytes(b"this is not a MAT file at all" * 10)
    elif case == "empty_mat":
        path.write_bytes(b"")
    elif case == "truncated_mat":
        scipy.io.savemat(path, {"R": matlab_struct(session_rdms(0), "hIT")})
        path.write_bytes(path.read_bytes()[:300])
    elif case == "v73_struct_without_RDM":  # an HDF5 .mat whose variable is a struct without RDM
        with h5py.File(path, "w") as f:
            f.create_group("R").attrs["MATLAB_class"] = np.bytes_("struct")
            f["R/x"] = np.zeros((2, 2))
    elif case == "v73_missing_variable":
        write_v73_struct(path, {"RDMs": _struct(RDM=[_rdm8(0), _rdm8(1)], name=["a", "b"])})
    elif case == "v73_cell_array":  # MATLAB's layout of a cell: references into /#refs#
        with h5py.File(path, "w") as f:
            f["#refs#/a"] = _rdm8(0)
            cell = f.create_dataset("C", data=np.array([[f["#refs#/a"].ref]], dtype=h5py.ref_dtype))
            cell.attrs["MATLAB_class"] = np.bytes_("cell")
    elif case == "rsatoolbox_pkl_not_rdms":
        path.write_bytes(pickle.dumps({"dissimilarities": "nonsense"}))
    elif case == "rsatoolbox_hdf5_truncated":
        with h5py.File(path, "w") as f:
            f.attrs["rsatoolbox_version"] = "0.3.2"
            f["dissimilarities"] = np.zeros((2, 28))
    else:
        RDMs(session_rdms(0)[:, 0][:, IU[0], IU[1]].astype(np.float64),
             rdm_descriptors={"roi": ["IT"] * N_SUBJ}).save(str(path))
    with pytest.raises(RDMFileError, match=message) as err:
        brain_of(tmp_path, name, f"{{X: {var}}}")
    assert name in str(err.value)


def test_new_keys_are_validated() -> None:
    base = ["brain=rdm_file", "brain.path=x.mat", "brain.images_dir=.", "++brain.rois={A: a}"]
    for bad, message in (("brain.sessions=both", r"brain.sessions='both' is not one of"),
                         ("brain.struct_axes=[subject,trial]", "brain.struct_axes"),
                         ("brain.struct_axes=[subject,subject]", "at most once"),
                         ("brain.axis_order=subject", "brain.axis_order='subject' is not one of")):
        with pytest.raises(ConfigError, match=message):
            typed_cfg([*base, bad])


@pytest.mark.slow
def test_untrained_job_on_a_matlab_struct_array(tmp_path: Path) -> None:
    """The issue's failing command, on a struct-array file: a bad variable ends with a message
    (no traceback, before any training data); the right one runs, stores the session means and
    the kept sessions, and the summary reports both ceilings."""
    rdms = session_rdms(0)
    images(tmp_path)
    scipy.io.savemat(tmp_path / "92_brainRDMs.mat", {"RDMs": matlab_struct(rdms, "hIT"),
                                                     "cells": np.array([[1, "a"]], dtype=object)})
    args = ["rule=untrained", "brain=rdm_file", f"brain.root={tmp_path}",
            "brain.path=92_brainRDMs.mat", "brain.images_dir=stim", "brain.image_glob=*.png",
            "brain.resolution=32", "data.n_train=64", "data.n_test=32", "data.batch_size=32",
            "backbone.channels=[4,8,8]", "backbone.fc_units=[16]", "progress=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def job(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "snnrsa", *args, *extra], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600)

    bad = job("++brain.rois={hIT: cells}", f"hydra.run.dir={tmp_path / 'bad'}")
    out = bad.stdout + bad.stderr
    assert bad.returncode != 0 and "Traceback" not in out
    assert "92_brainRDMs.mat:cells" in out and "cell array" in out
    good = job("++brain.rois={hIT: RDMs}", "brain.struct_axes=[subject,session]",
               "brain.sessions=separate", f"hydra.run.dir={tmp_path / 'run'}")
    assert good.returncode == 0, good.stdout[-3000:] + good.stderr[-3000:]
    rsa = pd.read_csv(tmp_path / "run" / "rsa.csv")
    assert sorted(rsa.subject.unique()) == ["S1X", "S2X", "S3X", "S4X"]
    assert (rsa.epoch == 0).all() and rsa.rho.notna().all()
    with h5py.File(tmp_path / "run" / "results.h5") as f:
        np.testing.assert_allclose(f["brain/hIT"][:], rdms.astype(np.float64).mean(axis=1),
                                   rtol=0, atol=1e-7)
        np.testing.assert_allclose(f["brain_sessions/hIT"][:], rdms, rtol=0, atol=0)
    # the summary's ceilings: LOSO as rsatoolbox, split-session from scipy and Spearman-Brown
    ceil = noise_ceilings([tmp_path / "run"]).set_index("roi").loc["hIT"]
    reference = boot_noise_ceiling(RDMs(rdms.astype(np.float64).mean(axis=1)[:, IU[0], IU[1]]),
                                   method="spearman")
    np.testing.assert_allclose([ceil.lower, ceil.upper], reference, rtol=0, atol=1e-6)
    split_r = np.mean([spearmanr(r[0][IU], r[1][IU])[0] for r in rdms])
    assert ceil.split_r == pytest.approx(split_r, abs=1e-6)
    assert ceil.split_ceiling == pytest.approx(np.sqrt(2 * split_r / (1 + split_r)), abs=1e-6)
    assert ceil.n_sessions == N_SESS

"""Precomputed brain RDMs in the forms the RSA community stores them.

One file, one entry per ROI (``brain.rois``: ROI -> variable). Accepted forms:

- numeric stacks in .mat (v5 and v7.3/HDF5), .npy, .npz, .h5: subjects x images x images (axis
  order configurable), one images x images RDM, or condensed vectors (n(n-1)/2 dissimilarities
  in the upper-triangle order of scipy's ``squareform`` and MATLAB's ``squareform``): a 1 x m
  vector, or subjects x m with ``axis_order=subject,pair``;
- MATLAB RSA-toolbox struct arrays (v5 and v7.3) of any shape with an ``RDM`` field (square or
  condensed) and optional ``name``; the axes of the struct array are mapped to subjects and
  sessions by ``struct_axes``; ``RDMs(2)`` (MATLAB indexing) takes one element, e.g. one ROI of
  a struct array that holds ROIs;
- rsatoolbox ``RDMs`` files (``RDMs.save``: hdf5 or pkl); the ROI's variable selects the RDMs
  whose ``roi`` descriptor equals it (``all`` takes every RDM), subject / session labels and the
  pattern (image) order come from its descriptors.

MATLAB v7.3 files are HDF5 with the axes reversed relative to MATLAB; they are read with h5py and
transposed back, so ``axis_order`` and ``struct_axes`` always describe the MATLAB (or numpy) order.
Everything is read and checked before any model work; every error is an :class:`RDMFileError`
naming the file, the variable, what it holds and the accepted forms.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from snnrsa.data.rdm_read import (
    ACCEPTED,
    MatStruct,
    RDMFileError,
    describe,
    dims,
    from_scipy,
    is_rsatoolbox,
    read_variable,
)

AXES = {"subject,image,image", "image,image,subject", "image,image", "subject,pair", "pair,subject"}
STRUCT_ROLES = ("subject", "session", "none")
SESSION_MODES = ("mean", "separate")
RSATOOLBOX_SUFFIXES = (".pkl", ".hdf5", ".h5")


@dataclass
class RDMSet:
    """RDMs read from one variable, before grouping by subject."""

    rdms: np.ndarray  # (k, n, n) float64, validated
    subjects: list[str] | None  # subject of each RDM (groups sessions), None = one RDM each
    sessions: list[str] | None  # session label of each RDM, None when the file carries none
    # pattern descriptors that may name the images (RDM order): rsatoolbox files only
    patterns: dict[str, list[str]]
    named: bool = True  # subjects are names from the file (not positions)



def _n_from_pairs(m: int) -> int | None:
    n = (1 + math.isqrt(1 + 8 * m)) // 2
    return n if n >= 2 and n * (n - 1) // 2 == m else None


def _squareform(vectors: np.ndarray, where: str) -> np.ndarray:
    """(k, m) condensed upper-triangle vectors -> (k, n, n) with zero diagonal."""
    n = _n_from_pairs(vectors.shape[1])
    if n is None:
        raise RDMFileError(f"{where}: {vectors.shape[1]} values per RDM is not n(n-1)/2 for any n "
                           f"(a condensed RDM); {ACCEPTED}")
    out = np.zeros((len(vectors), n, n))
    iu = np.triu_indices(n, 1)
    out[:, iu[0], iu[1]] = vectors
    return out + out.transpose(0, 2, 1)


def _as_float(value: Any, where: str, what: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise RDMFileError(f"{where}: {what} holds {describe(value)}, not numbers; {ACCEPTED}")
    return arr.astype(np.float64)


def _numeric_rdms(value: Any, where: str, axis_order: str) -> np.ndarray:
    """(k, n, n) from a numeric variable in the configured axis order (or a lone condensed
    vector, whatever the axis order)."""
    arr = _as_float(value, where, "the variable")
    if arr.ndim == 1 or (arr.ndim == 2 and 1 in arr.shape and arr.shape != (1, 1)
                         and axis_order not in ("subject,pair", "pair,subject")):
        return _squareform(arr.reshape(1, -1), where)
    if axis_order in ("subject,pair", "pair,subject"):
        if arr.ndim != 2:
            raise RDMFileError(f"{where}: expected 2 dimensions ({axis_order}), got {arr.shape}")
        return _squareform(arr if axis_order == "subject,pair" else arr.T, where)
    want = 2 if axis_order == "image,image" else 3
    if arr.ndim != want:
        hint = (" (condensed vectors: brain.axis_order=subject,pair)" if arr.ndim == 2
                and _n_from_pairs(arr.shape[-1]) else "")
        raise RDMFileError(f"{where}: expected {want} dimensions ({axis_order}), got shape "
                           f"{arr.shape}{hint}; {ACCEPTED}")
    if axis_order == "image,image":
        return arr[None]
    if axis_order == "image,image,subject":
        return np.moveaxis(arr, 2, 0)
    return arr


def _element_rdm(value: Any, where: str) -> np.ndarray:
    """One struct element's RDM field: square n x n or condensed 1 x m / m x 1."""
    arr = _as_float(value, where, "the RDM field")
    if arr.ndim == 2 and arr.shape[0] == arr.shape[1] and arr.shape[0] > 1:
        return arr
    if arr.ndim == 1 or (arr.ndim == 2 and 1 in arr.shape):
        return _squareform(arr.reshape(1, -1), where)[0]
    raise RDMFileError(f"{where}: the RDM field holds shape {arr.shape}, neither square nor "
                       f"a condensed vector; {ACCEPTED}")


def _struct_roles(shape: tuple[int, ...], struct_axes: list[str], where: str) -> list[str]:
    """The role of each axis of a struct array: struct_axes names every axis, or only the axes
    longer than 1 (singleton axes are then 'none'); empty = the one non-singleton axis is the
    subject axis."""
    big = [i for i, s in enumerate(shape) if s > 1]
    if not struct_axes:
        if len(big) > 1:
            raise RDMFileError(f"{where}: struct array {dims(shape)} has several axes; name them, "
                               "e.g. brain.struct_axes=[subject, session] (one of "
                               f"{list(STRUCT_ROLES)} per axis longer than 1, MATLAB order)")
        return ["subject" if i in big else "none" for i in range(len(shape))]
    if len(struct_axes) == len(shape):
        roles = list(struct_axes)
    elif len(struct_axes) == len(big):
        roles = ["none"] * len(shape)
        for i, role in zip(big, struct_axes):
            roles[i] = role
    else:
        raise RDMFileError(f"{where}: brain.struct_axes={list(struct_axes)} does not fit the struct "
                           f"array {dims(shape)}: give a role for every axis or for each of the "
                           f"{len(big)} axes longer than 1")
    bad = [shape[i] for i, r in enumerate(roles) if r == "none" and shape[i] > 1]
    if bad:
        raise RDMFileError(f"{where}: brain.struct_axes={list(struct_axes)} marks an axis of length "
                           f"{bad[0]} as none in struct array {dims(shape)}")
    return roles


def _subject_label(names: list[str], shared: set[str]) -> str:
    """Label from RSA-toolbox names such as 'hIT | BE | Session: 1': the '|' parts common to the
    subject's sessions, without those every subject shares (e.g. the ROI)."""
    parts = [[p.strip() for p in n.split("|")] for n in names]
    common = [p for p in parts[0] if all(p in q for q in parts[1:])]
    own = [p for p in common if p not in shared]
    return " | ".join(own or common) or names[0]


def _struct_rdms(st: MatStruct, where: str, struct_axes: list[str]) -> RDMSet:
    if "RDM" not in st.fields:
        raise RDMFileError(f"{where}: holds {st.describe()}, without an RDM field; {ACCEPTED}")
    if not st.shape or math.prod(st.shape) == 0:
        raise RDMFileError(f"{where}: holds an empty struct array; {ACCEPTED}")
    roles = _struct_roles(st.shape, struct_axes, where)
    for role in ("subject", "session"):
        if roles.count(role) > 1:
            raise RDMFileError(f"{where}: brain.struct_axes={list(struct_axes)} names {role} twice")
    idx = list(np.ndindex(st.shape))
    rdms = [_element_rdm(st.fields["RDM"][i], f"{where}({','.join(str(j + 1) for j in i)}).RDM")
            for i in idx]
    sizes = {r.shape[0] for r in rdms}
    if len(sizes) != 1:
        raise RDMFileError(f"{where}: struct elements hold RDMs of different sizes {sorted(sizes)}")

    def along(role: str, i: tuple[int, ...]) -> int:
        return i[roles.index(role)] if role in roles else 0

    subj = [along("subject", i) for i in idx]
    sess = [along("session", i) for i in idx]
    names = None
    if "name" in st.fields:
        raw = [st.fields["name"][i] for i in idx]
        names = [from_scipy(v) if not isinstance(v, str) else v for v in raw]
        names = [v if isinstance(v, str) else "" for v in names]
    labels, named = [f"sub-{s + 1:02d}" for s in subj], False
    if names and all(names):
        shared = set.intersection(*({p.strip() for p in n.split("|")} for n in names))
        by_subject = {s: _subject_label([n for n, t in zip(names, subj) if t == s], shared)
                      for s in sorted(set(subj))}
        if len(set(by_subject.values())) == len(by_subject):
            labels, named = [by_subject[s] for s in subj], True
    return RDMSet(np.stack(rdms), labels,
                  [str(s + 1) for s in sess] if "session" in roles else None, {}, named)


def _rsatoolbox_rdms(path: Path, variable: str | None, descriptors: dict[str, str]) -> RDMSet:
    """An rsatoolbox RDMs file: rows selected by the 'roi' descriptor (or all), labels and
    pattern names from the descriptors."""
    from rsatoolbox.rdm import load_rdm

    where = f"{path}:{variable}" if variable else str(path)
    file_type = "pkl" if path.suffix.lower() == ".pkl" else "hdf5"
    try:
        rdms = load_rdm(str(path), file_type=file_type)
    except Exception as err:  # a third-party reader on a malformed file: report, never trace
        raise RDMFileError(f"{path}: not a readable rsatoolbox RDMs {file_type} file "
                           f"({type(err).__name__}: {err}); {ACCEPTED}") from None
    rdesc = {k: list(np.asarray(v).tolist()) for k, v in rdms.rdm_descriptors.items()}
    if variable in (None, "all"):
        keep = np.ones(rdms.n_rdm, dtype=bool)
    elif "roi" in rdesc:
        keep = np.array([str(v) == variable for v in rdesc["roi"]])
        if not keep.any():
            raise RDMFileError(f"{where}: no RDM has roi descriptor {variable!r}; roi values are "
                               f"{sorted({str(v) for v in rdesc['roi']})} (or 'all')")
    else:
        raise RDMFileError(f"{where}: this rsatoolbox file has no 'roi' rdm descriptor (found "
                           f"{sorted(rdesc)}); map the ROI to 'all' to take every RDM")
    square = np.asarray(rdms.get_matrices(), dtype=np.float64)[keep]

    def labels(key: str) -> list[str] | None:
        name = descriptors.get(key)
        return [str(v) for v, k in zip(rdesc[name], keep) if k] if name in rdesc else None

    pname = descriptors.get("pattern", "auto")
    pdesc = {k: [str(v) for v in np.asarray(v).tolist()]
             for k, v in rdms.pattern_descriptors.items() if k != "index"}
    if pname not in ("auto", "none") and pname not in pdesc:
        raise RDMFileError(f"{where}: no pattern descriptor {pname!r} (brain.pattern_descriptor); "
                           f"found {sorted(pdesc)}")
    patterns = {} if pname == "none" else pdesc if pname == "auto" else {pname: pdesc[pname]}
    return RDMSet(square, labels("subject"), labels("session"), patterns)


def _split_index(variable: str | None) -> tuple[str | None, tuple[int, ...] | None]:
    """'RDMs(2)' or 'RDMs(1,3,2)' (MATLAB indexing, 1-based) -> ('RDMs', (2,) / (1, 3, 2))."""
    match = re.fullmatch(r"\s*([A-Za-z]\w*)\(\s*(\d+(?:\s*,\s*\d+)*)\s*\)\s*", variable or "")
    if match is None:
        return variable, None
    return match[1], tuple(int(i) for i in match[2].split(","))


def _struct_element(value: Any, index: tuple[int, ...], where: str) -> MatStruct:
    """One element of a struct array, by MATLAB linear index (column-major) or subscripts."""
    if not isinstance(value, MatStruct):
        raise RDMFileError(f"{where}: indexing needs a struct array, the variable holds "
                           f"{describe(value)}")
    shape = value.shape
    try:
        if len(index) == 1:
            sub = np.unravel_index(index[0] - 1, shape, order="F")
        elif len(index) == len(shape) and all(1 <= i <= s for i, s in zip(index, shape)):
            sub = tuple(i - 1 for i in index)
        else:
            raise ValueError
    except ValueError:
        raise RDMFileError(f"{where}: index {index} is outside the struct array "
                           f"{dims(shape)}") from None
    fields = {k: np.array([[None]], dtype=object) for k in value.fields}
    for k, v in value.fields.items():
        fields[k][0, 0] = v[sub]
    return MatStruct((1, 1), fields)


def _check(rdms: np.ndarray, where: str) -> None:
    """Square, symmetric, zero diagonal, finite (errors name the file and variable)."""
    if rdms.shape[1] != rdms.shape[2]:
        raise RDMFileError(f"{where}: RDMs are not square: shape {rdms.shape}")
    if not np.isfinite(rdms).all():
        raise RDMFileError(f"{where}: {int((~np.isfinite(rdms)).sum())} NaN or infinite entries")
    scale = max(float(np.abs(rdms).max()), 1.0)
    asym = float(np.abs(rdms - rdms.transpose(0, 2, 1)).max())
    if asym > 1e-6 * scale:
        raise RDMFileError(f"{where}: RDMs are not symmetric (max |D - D.T| = {asym:.3g})")
    diag = float(np.abs(np.diagonal(rdms, axis1=1, axis2=2)).max())
    if diag > 1e-6 * scale:
        raise RDMFileError(f"{where}: RDM diagonal is not zero (max |diag| = {diag:.3g})")


def read_rdm_set(
    path: str | Path,
    variable: str | None,
    axis_order: str = "subject,image,image",
    struct_axes: list[str] | None = None,
    descriptors: dict[str, str] | None = None,
) -> RDMSet:
    """The RDMs of one variable in any accepted form, validated, with the labels the file carries.
    ``descriptors`` names the rsatoolbox descriptors for 'subject', 'session' and 'pattern'."""
    path = Path(path)
    if not path.is_file():
        raise RDMFileError(f"RDM file not found: {path}")
    if axis_order not in AXES:
        raise RDMFileError(f"axis_order={axis_order!r} must be one of {sorted(AXES)}")
    where = f"{path}:{variable}" if variable else str(path)
    if is_rsatoolbox(path):
        rset = _rsatoolbox_rdms(path, variable, descriptors or {})
    else:
        base, index = _split_index(variable)
        value = read_variable(path, base)
        if index is not None:
            value = _struct_element(value, index, where)
        if isinstance(value, MatStruct):
            rset = _struct_rdms(value, where, list(struct_axes or []))
            rset.named = rset.named and index is None  # an element's name is not a subject's
        else:
            rset = RDMSet(_numeric_rdms(value, where, axis_order), None, None, {})
    _check(rset.rdms, where)
    return rset


def load_rdm_stack(
    path: str | Path, variable: str | None, axis_order: str, n_stimuli: int | None = None
) -> np.ndarray:
    """RDMs as (k, n, n) float64 in file order, validated; n must equal n_stimuli when given."""
    rdms = read_rdm_set(path, variable, axis_order).rdms
    check_size(rdms, n_stimuli, f"{path}:{variable}" if variable else str(path))
    return rdms


def check_size(rdms: np.ndarray, n_stimuli: int | None, where: str) -> None:
    if n_stimuli is not None and rdms.shape[1] != n_stimuli:
        raise RDMFileError(f"{where}: RDMs are {rdms.shape[1]} x {rdms.shape[1]} but there are "
                           f"{n_stimuli} stimulus images")


@dataclass
class SubjectRDMs:
    """One ROI's RDMs grouped by subject: per-subject means and, kept, the session RDMs."""

    rdms: np.ndarray  # (subjects, n, n): mean over each subject's sessions
    subjects: list[str] | None  # names from the file, None when it carries none
    sessions: np.ndarray | None  # (subjects, sessions, n, n) when sessions are kept


def by_subject(rset: RDMSet, sessions: str, where: str) -> SubjectRDMs:
    """Group RDMs by subject label (first-appearance order); several RDMs of one subject are its
    sessions, averaged (``mean``, as the MATLAB toolbox's averageRDMs_subjectSession) or also kept
    (``separate``: every subject needs the same number, for split-session ceilings)."""
    if sessions not in SESSION_MODES:
        raise RDMFileError(f"brain.sessions={sessions!r} must be one of {list(SESSION_MODES)}")
    if rset.subjects is None:
        if sessions == "separate":
            raise RDMFileError(f"{where}: brain.sessions=separate but the file names no sessions "
                               "(struct arrays: a session axis in brain.struct_axes; rsatoolbox: "
                               "a subject and session descriptor)")
        return SubjectRDMs(rset.rdms, None, None)
    order = list(dict.fromkeys(rset.subjects))
    sess = rset.sessions or [""] * len(rset.subjects)
    rank = {s: r for r, s in enumerate(dict.fromkeys(sess))}  # sessions aligned across subjects
    groups = [sorted((i for i, s in enumerate(rset.subjects) if s == subj),
                     key=lambda i: (rank[sess[i]], i)) for subj in order]
    means = np.stack([rset.rdms[g].mean(axis=0) for g in groups])
    names = order if rset.named else None
    if sessions == "mean":
        return SubjectRDMs(means, names, None)
    counts = {len(g) for g in groups}
    if len(counts) != 1 or counts == {1}:
        got = {subj: len(g) for subj, g in zip(order, groups)}
        raise RDMFileError(f"{where}: brain.sessions=separate needs the same number (>= 2) of "
                           f"sessions for every subject; sessions per subject: {got}")
    return SubjectRDMs(means, names, np.stack([rset.rdms[g] for g in groups]))


def match_images(
    patterns: dict[str, list[str]], files: list[str], explicit: bool, where: str
) -> list[str] | None:
    """Image file names of the RDM rows, from the first pattern descriptor whose values all name
    one of ``files`` (by file name or by stem); None when no descriptor does and the descriptor
    was not asked for by name (``explicit``: then the unmatched names are the error)."""
    stems: dict[str, list[str]] = {}
    for f in files:
        stems.setdefault(Path(f).stem, []).append(f)
    known = set(files)
    for key, values in patterns.items():
        out = [v if v in known else stems[v][0] if len(stems.get(v, [])) == 1 else "" for v in values]
        if all(out) and len(set(out)) == len(out):
            return out
        if explicit:
            bad = [v for v, o in zip(values, out) if not o][:5]
            raise RDMFileError(f"{where}: pattern descriptor {key!r} names images that are not "
                               f"(uniquely) among the {len(files)} brain.images_dir files, e.g. "
                               f"{bad or 'duplicates'}")
    return None

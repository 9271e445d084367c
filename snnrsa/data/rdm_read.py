"""Reading one variable of an RDM file as it is stored: MATLAB v5 (scipy) and v7.3 (HDF5, read
with h5py and transposed back to MATLAB order), .npy, .npz and plain HDF5. Values come back as
numpy arrays, text or :class:`MatStruct`; what they mean as RDMs is decided in ``rdm_file``.
Every failure is an :class:`RDMFileError` naming the file, the variable and what it holds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.io
from scipy.io.matlab import MatReadError

ACCEPTED = (
    "accepted forms: a numeric stack (axis_order subject,image,image | image,image,subject | "
    "image,image), condensed vectors of n(n-1)/2 dissimilarities (1 x m, or subjects x m with "
    "axis_order=subject,pair), a MATLAB RSA-toolbox struct array with an RDM field (v5 or v7.3), "
    "or an rsatoolbox RDMs file (RDMs.save, hdf5 or pkl)"
)


class RDMFileError(ValueError):
    """A precomputed-RDM input that cannot be used; the message names the file and variable."""


@dataclass
class MatStruct:
    """A MATLAB struct array: its MATLAB shape and, per field, an object array of that shape."""

    shape: tuple[int, ...]
    fields: dict[str, np.ndarray]

    def describe(self) -> str:
        return f"a MATLAB struct array {dims(self.shape)} with fields {sorted(self.fields)}"


def dims(shape: tuple[int, ...]) -> str:
    return " x ".join(str(s) for s in shape) if shape else "scalar"


def describe(value: Any) -> str:
    if isinstance(value, MatStruct):
        return value.describe()
    if isinstance(value, str):
        return f"text {value[:40]!r}"
    arr = np.asarray(value)
    if arr.dtype == object:
        return f"a MATLAB cell array / object array {dims(arr.shape)}"
    if arr.dtype.kind in "US":
        return f"text of shape {arr.shape}"
    return f"a {arr.dtype} array of shape {arr.shape}"


# ----------------------------------------------------------------------------------- MATLAB v7.3

def _h5_value(f: h5py.File, node: Any, where: str) -> Any:
    """A MATLAB v7.3 value: numeric arrays transposed back to MATLAB order, char as str."""
    if isinstance(node, h5py.Group):
        if node.attrs.get("MATLAB_class", b"") in (b"struct", "struct"):
            return _h5_struct(f, node, where)
        return MatStruct((), {})  # an unknown group; described as a struct without fields
    cls = node.attrs.get("MATLAB_class", b"")
    cls = cls.decode() if isinstance(cls, bytes) else str(cls)
    if "MATLAB_empty" in node.attrs and node.attrs["MATLAB_empty"]:
        return "" if cls == "char" else np.zeros((0, 0))
    if cls == "char":
        return "".join(chr(c) for c in np.asarray(node[()]).T.ravel())
    if h5py.check_dtype(ref=node.dtype) is not None:
        refs = np.asarray(node[()])
        out = np.empty(refs.shape, dtype=object)
        for idx in np.ndindex(refs.shape):
            out[idx] = _h5_value(f, f[refs[idx]], where)
        return out.T  # a cell array
    return np.transpose(node[()])


def _h5_describe(node: Any, matlab: bool) -> str:
    """What an HDF5 node holds, from its metadata only (MATLAB order where ``matlab``)."""
    if isinstance(node, h5py.Group):
        fields = sorted(node)
        if matlab and node.attrs.get("MATLAB_class", b"") in (b"struct", "struct") and fields:
            first = node[fields[0]]
            refs = isinstance(first, h5py.Dataset) and h5py.check_dtype(ref=first.dtype)
            shape = tuple(reversed(first.shape)) if refs else (1, 1)
            return f"a MATLAB struct array {dims(shape)} with fields {fields}"
        return f"an HDF5 group with {fields[:8]}"
    shape = tuple(reversed(node.shape)) if matlab else node.shape
    cls = node.attrs.get("MATLAB_class", b"")
    cls = cls.decode() if isinstance(cls, bytes) else str(cls)
    return f"a {cls or node.dtype} array of shape {shape}"


def _h5_struct(f: h5py.File, group: h5py.Group, where: str) -> MatStruct:
    """Struct array layout: each field a dataset of object references (shape reversed), or, for
    a 1 x 1 struct, each field stored directly in the group."""
    fields = {k: group[k] for k in group}
    if not fields:
        return MatStruct((1, 1), {})
    ref_fields = [isinstance(d, h5py.Dataset) and h5py.check_dtype(ref=d.dtype) is not None
                  and d.attrs.get("MATLAB_class", b"") not in (b"cell", "cell")
                  for d in fields.values()]
    if all(ref_fields):
        shapes = {d.shape for d in fields.values()}
        if len(shapes) != 1:
            raise RDMFileError(f"{where}: struct fields have different shapes {sorted(shapes)}")
        shape = tuple(reversed(next(iter(shapes))))
        out = {}
        for name, d in fields.items():
            refs = np.asarray(d[()]).T  # MATLAB order
            vals = np.empty(shape, dtype=object)
            for idx in np.ndindex(shape):
                vals[idx] = _h5_value(f, f[refs[idx]], where)
            out[name] = vals
        return MatStruct(shape, out)
    out = {}
    for name, node in fields.items():
        cell = np.empty((1, 1), dtype=object)
        cell[0, 0] = _h5_value(f, node, where)
        out[name] = cell
    return MatStruct((1, 1), out)


# -------------------------------------------------------------------------------------- reading

def from_scipy(value: Any) -> Any:
    """scipy.io.loadmat values: structured arrays become MatStruct, char arrays become str."""
    if isinstance(value, np.ndarray) and value.dtype.names:
        return MatStruct(value.shape, {k: value[k] for k in value.dtype.names})
    if isinstance(value, np.ndarray) and value.dtype.kind == "U":
        return "".join(value.ravel().tolist())
    return value


def _listing(items: dict[str, Any]) -> str:
    return "; ".join(f"{k!r}: {describe(v)}" for k, v in sorted(items.items())) or "nothing"


def read_variable(path: Path, variable: str | None) -> Any:
    """The raw variable: a numeric array, a MatStruct, or anything else (described in errors)."""
    suffix = path.suffix.lower()
    where = f"{path}:{variable}" if variable else str(path)
    try:
        if suffix == ".mat" and h5py.is_hdf5(path):  # MATLAB v7.3
            with h5py.File(path, "r") as f:
                names = [k for k in f if not k.startswith("#")]
                if variable not in names:
                    found = "; ".join(f"{k!r}: {_h5_describe(f[k], True)}" for k in sorted(names))
                    raise RDMFileError(f"{path}: no variable {variable!r}; found {found or 'nothing'}")
                return _h5_value(f, f[variable], where)
        if suffix == ".mat":
            try:
                mat = scipy.io.loadmat(path)
            except (MatReadError, ValueError, NotImplementedError, TypeError, OSError) as err:
                raise RDMFileError(f"{path}: not a readable MATLAB file ({err})") from None
            found = {k: from_scipy(v) for k, v in mat.items() if not k.startswith("__")}
            if variable not in found:
                raise RDMFileError(f"{path}: no variable {variable!r}; found {_listing(found)}")
            return found[variable]
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if variable not in z:
                    found = {k: z[k] for k in z.files}
                    raise RDMFileError(f"{path}: no array {variable!r}; found {_listing(found)}")
                return z[variable]
        if suffix in (".h5", ".hdf5"):
            with h5py.File(path, "r") as f:
                if variable not in f:
                    found = "; ".join(f"{k!r}: {_h5_describe(f[k], False)}" for k in sorted(f))
                    raise RDMFileError(f"{path}: no dataset {variable!r}; found {found or 'nothing'}")
                node = f[variable]
                if not isinstance(node, h5py.Dataset):
                    raise RDMFileError(f"{where}: an HDF5 group, not a dataset; {ACCEPTED}")
                return node[()]
    except RDMFileError:
        raise
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise RDMFileError(f"{where}: cannot read the file ({type(err).__name__}: {err})") from None
    raise RDMFileError(f"{path}: unsupported RDM file type {suffix!r} "
                       "(.mat, .npy, .npz, .h5, .hdf5, .pkl)")


def is_rsatoolbox(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix == ".pkl":
        return True
    if suffix in (".h5", ".hdf5") and h5py.is_hdf5(path):
        with h5py.File(path, "r") as f:
            return "rsatoolbox_version" in f.attrs or (
                "dissimilarities" in f and "rdm_descriptors" in f)
    return False


"""A response matrix written as pandas' "fixed"-format HDF5 (``DataFrame.to_hdf``) with h5py
alone, byte-compatible with what ``pandas.read_hdf`` (PyTables) reads: the THINGS-fMRI release's
``sub-0X_ResponseData.h5`` layout."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np


def _set_str(obj: h5py.Group | h5py.Dataset, name: str, value: str) -> None:
    """A string attribute as PyTables stores a Python str: fixed length, UTF-8 (empty: no data)."""
    if not value:
        obj.attrs[name] = h5py.Empty("S1")
        return
    data = value.encode()
    obj.attrs.create(name, np.array(data), dtype=h5py.string_dtype("utf-8", len(data)))


def _write_array(group: h5py.Group, key: str, values: np.ndarray, kind: str | None) -> None:
    ds = group.create_dataset(key, data=values)
    for name, value in (("CLASS", "ARRAY"), ("FLAVOR", "numpy"), ("TITLE", ""), ("VERSION", "2.4")):
        _set_str(ds, name, value)
    if kind is not None:  # a pandas Index: its kind, its name (None, pickled) and nan_rep
        _set_str(ds, "kind", kind)
        ds.attrs["name"] = np.bytes_(b"N.")
        if kind == "string":
            _set_str(ds, "nan_rep", "")
    ds.attrs["transposed"] = np.uint8(1)  # PyTables writes a 1-byte bitfield; same value


def write_response_h5(path: Path, responses: np.ndarray, voxel_ids: np.ndarray) -> None:
    """Write what ``DataFrame.to_hdf(path, key="ResponseData")`` writes for a frame with columns
    ``voxel_id, "0", "1", ...`` (string labels, as after reading a CSV) and a RangeIndex.

    Layout: float block0 (trial columns) and int64 block1 (voxel_id), both stored transposed
    (rows = voxels); axis0 = column labels (fixed-length bytes), axis1 = the row index 0..n-1.
    """
    n_vox, n_trials = responses.shape
    trial_labels = np.array([str(t).encode() for t in range(n_trials)])
    with h5py.File(path, "w") as f:
        for name, value in (
            ("CLASS", "GROUP"),
            ("PYTABLES_FORMAT_VERSION", "2.1"),
            ("TITLE", ""),
            ("VERSION", "1.0"),
        ):
            _set_str(f, name, value)
        g = f.create_group("ResponseData")
        for name, value in (
            ("CLASS", "GROUP"),
            ("TITLE", ""),
            ("VERSION", "1.0"),
            ("pandas_type", "frame"),
            ("pandas_version", "0.15.2"),
            ("encoding", "UTF-8"),
            ("errors", "strict"),
            ("axis0_variety", "regular"),
            ("axis1_variety", "regular"),
            ("block0_items_variety", "regular"),
            ("block1_items_variety", "regular"),
        ):
            _set_str(g, name, value)
        g.attrs["ndim"] = np.int64(2)
        g.attrs["nblocks"] = np.int64(2)
        _write_array(g, "axis0", np.concatenate([[b"voxel_id"], trial_labels]), "string")
        _write_array(g, "axis1", np.arange(n_vox, dtype=np.int64), "integer")
        _write_array(g, "block0_items", trial_labels, "string")
        _write_array(g, "block0_values", np.asarray(responses, dtype=np.float64), None)
        _write_array(g, "block1_items", np.array([b"voxel_id"]), "string")
        _write_array(g, "block1_values", np.asarray(voxel_ids, dtype=np.int64)[:, None], None)

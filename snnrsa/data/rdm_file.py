"""Precomputed brain RDM stacks from .mat (v5 and v7.3/HDF5), .npy/.npz and .h5 files.

Each ROI is one variable holding subjects x images x images (axis order configurable). MATLAB v7.3
files are HDF5 with the axes reversed relative to MATLAB; they are read with h5py and transposed
back, so ``axis_order`` always describes the MATLAB (or numpy) order of the variable.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import scipy.io

AXES = {"subject,image,image", "image,image,subject", "image,image"}


def _read_variable(path: Path, variable: str | None) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix == ".mat" and h5py.is_hdf5(path):  # MATLAB v7.3
        with h5py.File(path, "r") as f:
            if variable not in f:
                raise KeyError(f"{path}: no variable {variable!r}; found {sorted(f.keys())}")
            return np.transpose(f[variable][()])
    if suffix == ".mat":
        try:
            mat = scipy.io.loadmat(path)
        except (ValueError, NotImplementedError) as err:
            raise ValueError(f"{path}: not a readable MATLAB file ({err})") from None
        keys = sorted(k for k in mat if not k.startswith("__"))
        if variable not in mat:
            raise KeyError(f"{path}: no variable {variable!r}; found {keys}")
        return np.asarray(mat[variable])
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if variable not in z:
                raise KeyError(f"{path}: no array {variable!r}; found {sorted(z.files)}")
            return z[variable]
    if suffix in (".h5", ".hdf5"):
        with h5py.File(path, "r") as f:
            if variable not in f:
                raise KeyError(f"{path}: no dataset {variable!r}; found {sorted(f.keys())}")
            return f[variable][()]
    raise ValueError(f"{path}: unsupported RDM file type {suffix!r} (.mat, .npy, .npz, .h5)")


def load_rdm_stack(
    path: str | Path, variable: str | None, axis_order: str, n_stimuli: int | None = None
) -> np.ndarray:
    """RDMs as (subjects, n, n) float64, validated: square, symmetric, zero diagonal, finite,
    and n equal to the number of stimuli when given. Errors name the file and variable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"RDM file not found: {path}")
    if axis_order not in AXES:
        raise ValueError(f"axis_order={axis_order!r} must be one of {sorted(AXES)}")
    arr = np.asarray(_read_variable(path, variable), dtype=np.float64)
    where = f"{path}:{variable}" if variable else str(path)
    want = 2 if axis_order == "image,image" else 3
    if arr.ndim != want:
        raise ValueError(f"{where}: expected {want} dimensions ({axis_order}), got {arr.shape}")
    if axis_order == "image,image":
        arr = arr[None]
    elif axis_order == "image,image,subject":
        arr = np.moveaxis(arr, 2, 0)
    if arr.shape[1] != arr.shape[2]:
        raise ValueError(f"{where}: RDMs are not square: shape {arr.shape} ({axis_order})")
    if not np.isfinite(arr).all():
        raise ValueError(f"{where}: {int((~np.isfinite(arr)).sum())} NaN or infinite entries")
    scale = max(float(np.abs(arr).max()), 1.0)
    asym = float(np.abs(arr - arr.transpose(0, 2, 1)).max())
    if asym > 1e-8 * scale:
        raise ValueError(f"{where}: RDMs are not symmetric (max |D - D.T| = {asym:.3g})")
    diag = float(np.abs(np.diagonal(arr, axis1=1, axis2=2)).max())
    if diag > 1e-8 * scale:
        raise ValueError(f"{where}: RDM diagonal is not zero (max |diag| = {diag:.3g})")
    if n_stimuli is not None and arr.shape[1] != n_stimuli:
        raise ValueError(
            f"{where}: RDMs are {arr.shape[1]} x {arr.shape[1]} but there are {n_stimuli} "
            "stimulus images"
        )
    return arr

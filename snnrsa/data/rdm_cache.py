"""Brain-RDM cache, so that a sweep reads each subject's 17 GB response file once, not per job.

One entry per (subject, ROI, selection, z-scoring, reliability threshold, non-finite policy), in
its own small HDF5 file ``<subject>-<key>.h5``, where key is a hash of every input that determines
the RDM: size and mtime of the subject's three files, the ROI's columns, the options above, the
RDM method and ``CACHE_VERSION``. Changing a file or an option therefore misses, never returns a
stale RDM. An entry is written to a temporary file in the same folder and renamed into place
(atomic on POSIX), so concurrent jobs see no entry or a complete one, and a failed write leaves
nothing behind; two jobs computing the same key write identical content and the last rename wins.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when the reader's output for the same inputs changes
RDM_METHOD = "correlation"
FOLDER = "snnrsa_rdm_cache"


@dataclass
class RdmEntry:
    """One subject's RDM for one ROI, in that subject's condition order (sorted names)."""

    rdm: np.ndarray | None  # (n, n); None when the ROI has no voxels for this subject
    names: list[str]
    relpaths: list[list[str]]  # per condition, the "concept/file.jpg" images it averages
    sessions: np.ndarray  # (n,)
    fmri_runs: np.ndarray  # (n,); stored as "runs" in the entry file
    n_voxels: int
    n_dropped: int  # voxels dropped for NaN/inf betas
    empty_reason: str = ""  # why rdm is None


def cache_key(
    files: list[Path],
    *,
    columns: list[str],
    selection: str,
    zscore: str,
    min_reliability: float | None,
    on_nonfinite: str,
) -> tuple[str, dict]:
    """The hash of the inputs, and the inputs themselves (stored in the entry for inspection)."""
    stats = [(p.name, p.stat()) for p in files]
    inputs = {
        "files": [[name, st.st_size, st.st_mtime_ns] for name, st in stats],
        "columns": sorted(columns),
        "selection": selection,
        "zscore": zscore,
        "min_reliability": min_reliability,
        "on_nonfinite": on_nonfinite,
        "method": RDM_METHOD,
        "version": CACHE_VERSION,
    }
    text = json.dumps(inputs, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24], inputs


def resolve_cache_dir(cache_dir: str | Path | None, data_dir: Path) -> Path:
    """``cache_dir`` if given; else next to the data, or ``~/.cache/snnrsa`` where the data folder
    is not writable (a read-only release mount)."""
    if cache_dir is not None:
        folder = Path(cache_dir).expanduser() / FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    folder = data_dir / FOLDER
    try:
        folder.mkdir(exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
        return folder
    except OSError as err:
        fallback = Path("~/.cache/snnrsa").expanduser() / FOLDER
        log.info("brain-RDM cache: %s not writable (%s); using %s", folder, err, fallback)
        fallback.mkdir(parents=True, exist_ok=True)
        return fallback


class RdmCache:
    """Brain-RDM entries in one folder, one HDF5 file per key."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, subject: str, key: str) -> Path:
        return self.folder / f"{subject}-{key}.h5"

    def get(self, subject: str, key: str) -> RdmEntry | None:
        """The entry, or None when absent or unreadable (it is then recomputed and replaced)."""
        path = self.path(subject, key)
        if not path.is_file():
            return None
        try:
            with h5py.File(path, "r") as f:
                return RdmEntry(
                    rdm=f["rdm"][()] if "rdm" in f else None,
                    names=[s.decode() for s in f["names"][()]],
                    relpaths=json.loads(f["relpaths_json"][()]),
                    sessions=f["sessions"][()],
                    fmri_runs=f["runs"][()],
                    n_voxels=int(f.attrs["n_voxels"]),
                    n_dropped=int(f.attrs["n_dropped"]),
                    empty_reason=str(f.attrs["empty_reason"]),
                )
        except (OSError, KeyError, ValueError) as err:
            log.warning("brain-RDM cache: ignoring unreadable entry %s (%s)", path, err)
            return None

    def put(self, subject: str, key: str, entry: RdmEntry, inputs: dict) -> Path:
        """Write the entry atomically (temporary file + rename)."""
        final = self.path(subject, key)
        fd, name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=".tmp", dir=self.folder)
        os.close(fd)
        tmp = Path(name)
        try:
            with h5py.File(tmp, "w") as f:
                if entry.rdm is not None:
                    f.create_dataset("rdm", data=np.asarray(entry.rdm, dtype=np.float64))
                f.create_dataset("names", data=np.array([n.encode() for n in entry.names]))
                f.create_dataset(
                    "relpaths_json", data=json.dumps(entry.relpaths), dtype=h5py.string_dtype()
                )
                f.create_dataset("sessions", data=np.asarray(entry.sessions, dtype=np.int64))
                f.create_dataset("runs", data=np.asarray(entry.fmri_runs, dtype=np.int64))
                f.attrs["n_voxels"] = entry.n_voxels
                f.attrs["n_dropped"] = entry.n_dropped
                f.attrs["empty_reason"] = entry.empty_reason
                f.attrs["subject"] = subject
                f.attrs["key"] = key
                f.attrs["inputs"] = json.dumps(inputs, sort_keys=True)
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return final

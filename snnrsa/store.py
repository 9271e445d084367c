"""The run directory: atomic writers for rsa.csv, train.csv, results.h5, checkpoints, metadata.

Every file is written to a temporary name in the same directory and renamed, so a killed run
never leaves a half-written file over a good one.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import torch

from snnrsa.brain import Brain

PACKAGES = ("torch", "snntorch", "norse", "numpy", "scipy", "h5py", "hydra-core", "omegaconf",
            "rsatoolbox", "pandas", "matplotlib")


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path next to ``path``; rename it over ``path`` only on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    with atomic_path(path) as tmp:
        write(tmp)


def write_csv(df: pd.DataFrame, path: Path) -> None:
    write_atomic(path, lambda tmp: df.to_csv(tmp, index=False))


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    return versions


def git_commit() -> str:
    """Commit of the snnrsa source tree, with '-dirty' when it has uncommitted changes."""
    src = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True,
                             text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=src,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_description(device: torch.device) -> str:
    """The device as run metadata records it; on the CPU with torch's vector instruction set:
    float32 training is bit-reproducible on the same set, not across sets (AVX2 vs AVX-512)."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return (f"cpu ({platform.processor() or platform.machine()}, "
            f"{torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads)")


def run_metadata(config_yaml: str, device: torch.device) -> dict[str, Any]:
    return {
        "config": config_yaml,
        "versions": library_versions(),
        "device": device_description(device),
        "git_commit": git_commit(),
    }


def write_metadata(out_dir: Path, meta: dict[str, Any]) -> None:
    write_atomic(out_dir / "config.yaml", lambda tmp: tmp.write_text(meta["config"]))
    write_atomic(out_dir / "meta.json", lambda tmp: tmp.write_text(json.dumps(meta, indent=2)))


def write_results_h5(
    path: Path, brain: Brain, model_rdms: dict[int, dict[str, np.ndarray]], meta: dict[str, Any],
    dynamics: list[dict[str, Any]] | None = None,
) -> None:
    """``/stimuli/names``, ``/brain/subjects``, ``/brain/<roi>`` (subjects x n x n), kept
    session RDMs ``/brain_sessions/<roi>`` (subjects x sessions x n x n, brain.sessions=separate),
    ``/model/epoch_<E>/<layer>`` (n x n), sub-epoch snapshots ``/dynamics/probe_<k>/<name>`` (with
    ``images`` and ``epoch`` attributes), run metadata as root attributes."""

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            str_dt = h5py.string_dtype()
            f.create_dataset("stimuli/names", data=np.array(brain.stimuli, dtype=object),
                             dtype=str_dt)
            f.create_dataset("stimuli/sessions", data=brain.sessions)
            f.create_dataset("stimuli/fmri_runs", data=brain.fmri_runs)
            f.create_dataset("brain/subjects", data=np.array(brain.subjects, dtype=object),
                             dtype=str_dt)
            for roi, rdm in brain.rdms.items():
                f.create_dataset(f"brain/{roi}", data=rdm, compression="gzip")
            for roi, rdm in brain.session_rdms.items():
                f.create_dataset(f"brain_sessions/{roi}", data=rdm, compression="gzip")
            for epoch, layers in sorted(model_rdms.items()):
                for layer, rdm in layers.items():
                    f.create_dataset(f"model/epoch_{epoch}/{layer}", data=rdm, compression="gzip")
            for k, snap in enumerate(dynamics or []):
                grp = f.create_group(f"dynamics/probe_{k:05d}")
                grp.attrs["images"] = snap["images"]
                grp.attrs["epoch"] = snap["epoch"]
                for name, arr in snap["arrays"].items():
                    grp.create_dataset(name, data=np.asarray(arr))
            f.attrs["config"] = meta["config"]
            f.attrs["versions"] = json.dumps(meta["versions"])
            f.attrs["device"] = meta["device"]
            f.attrs["git_commit"] = meta["git_commit"]

    write_atomic(path, write)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    write_atomic(path, lambda tmp: torch.save(state, tmp))

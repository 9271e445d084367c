"""Peak resident memory of building every ROI RDM of one THINGS-fMRI subject (issue 3).

A real subject's response matrix is 16-18 GB, so the reader must never hold it, nor all ROI rows
at once. This writes one synthetic subject of the release's per-row shape (default 60,000 voxels x
9,840 trials float64, about 4.7 GB, in the pandas fixed-format layout), its stimulus metadata
(720 concepts x 12 exemplars + 100 test images x 12, over 12 sessions x 10 runs) and voxel
metadata with six ROIs of realistic size, then builds all ROI RDMs through ``_things_brain`` in a
fresh child process per configuration and prints the child's peak RSS (``ru_maxrss``), so the
parent's writing buffers do not count. The data are deleted afterwards (unless --keep).

    python tools/bench_things_memory.py [--voxels 60000] [--dir /tmp] [--keep]

Target: peak RSS below 1.5 GB.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

N_CONCEPTS, N_EXEMPLARS, N_TEST, N_SESSIONS, N_RUNS = 720, 12, 100, 12, 10
# Voxels per ROI column (disjoint here, so their union, 27,200 voxels, is what is read).
ROI_SIZES = {
    "V1": 3500,
    "V2": 3500,
    "V3": 3000,
    "hV4": 1200,
    "lLOC": 2000,
    "rLOC": 2000,
    "IT": 12000,
}
RUNS = [("exemplar01", "all"), ("concept_mean", "session")]
GB = 1e9


def _stimulus_metadata(rng: np.random.Generator) -> pd.DataFrame:
    """Each session: one exemplar of every concept and every test image, shuffled into runs."""
    concepts = [f"concept{c:03d}" for c in range(N_CONCEPTS)]
    exemplar = {c: rng.permutation(N_EXEMPLARS) for c in concepts}
    rows = []
    for s in range(N_SESSIONS):
        shown = [(f"{c}_{exemplar[c][s] + 1:02d}b.jpg", c, "train") for c in concepts]
        shown += [(f"{c}_13s.jpg", c, "test") for c in concepts[:N_TEST]]
        order = rng.permutation(len(shown))
        for r, part in enumerate(np.array_split(order, N_RUNS)):
            rows += [(shown[j][2], s + 1, r + 1, 1, shown[j][0], shown[j][1]) for j in part]
    meta = pd.DataFrame(
        rows, columns=["trial_type", "session", "run", "subject_id", "stimulus", "concept"]
    )
    meta.insert(4, "trial_id", np.arange(len(meta)))
    return meta


def write_subject(folder: Path, n_voxels: int, seed: int = 0) -> None:
    """sub-01's three files and its images (empty files: only their existence is checked)."""
    import h5py

    rng = np.random.default_rng(seed)
    fmri, images = folder / "fmri", folder / "images" / "object_images"
    fmri.mkdir(parents=True)
    meta = _stimulus_metadata(rng)
    meta.to_csv(fmri / "sub-01_StimulusMetadata.csv", index=False)
    for concept, stimulus in set(zip(meta["concept"], meta["stimulus"])):
        (images / concept).mkdir(parents=True, exist_ok=True)
        (images / concept / stimulus).touch()
    owner = np.full(n_voxels, "", dtype=object)
    owner[rng.permutation(n_voxels)[: sum(ROI_SIZES.values())]] = np.repeat(
        list(ROI_SIZES), list(ROI_SIZES.values())
    )
    vox = pd.DataFrame({"voxel_id": np.arange(n_voxels), "subject_id": 1})
    for col in ROI_SIZES:
        vox[col] = (owner == col).astype(np.int64)
    vox.to_csv(fmri / "sub-01_VoxelMetadata.csv", index=False)
    n_trials, step = len(meta), 1000
    with h5py.File(fmri / "sub-01_ResponseData.h5", "w") as f:
        g = f.create_group("ResponseData")
        g.attrs["pandas_type"] = "frame"
        g["axis0"] = np.array([b"voxel_id"] + [str(t).encode() for t in range(n_trials)])
        g["axis1"] = np.arange(n_voxels, dtype=np.int64)
        g["block0_items"] = g["axis0"][1:]
        block = g.create_dataset("block0_values", (n_voxels, n_trials), dtype=np.float64)
        for a in range(0, n_voxels, step):  # bounded memory while writing, too
            b = min(a + step, n_voxels)
            block[a:b] = rng.standard_normal((b - a, n_trials)) + rng.normal(0, 1, (b - a, 1))
        block.attrs["transposed"] = 1
        g["block1_items"] = np.array([b"voxel_id"])
        g["block1_values"] = np.arange(n_voxels, dtype=np.int64)[:, None]


def child(folder: Path, selection: str, zscore: str) -> None:
    """Build every ROI RDM once (cold cache) and once more (warm); print JSON with peak RSS."""
    from snnrsa.brain import _things_brain
    from snnrsa.config import ThingsBrainConfig

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    cfg = ThingsBrainConfig(
        fmri_dir=str(folder / "fmri"),
        images_dir=str(folder / "images"),
        subjects=["sub-01"],
        selection=selection,
        zscore=zscore,
        cache_dir=str(folder / f"cache_{selection}_{zscore}"),
    )
    t0 = time.perf_counter()
    brain = _things_brain(cfg, folder / "fmri", folder / "images")
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    _things_brain(cfg, folder / "fmri", folder / "images")
    warm = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "selection": selection,
                "zscore": zscore,
                "n_conditions": len(brain.stimuli),
                "rois": {roi: list(r.shape) for roi, r in brain.rdms.items()},
                "baseline_rss_mb": rss / 1024,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "seconds_cold": round(cold, 1),
                "seconds_cached": round(warm, 2),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxels", type=int, default=60_000)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--keep", action="store_true", help="keep the data folder")
    parser.add_argument(
        "--child", nargs=3, metavar=("FOLDER", "SELECTION", "ZSCORE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), args.child[1], args.child[2])
        return
    size = args.voxels * N_SESSIONS * (N_CONCEPTS + N_TEST) * 8
    free = shutil.disk_usage(args.dir).free
    print(
        f"response matrix {args.voxels} x {N_SESSIONS * (N_CONCEPTS + N_TEST)} float64 = "
        f"{size / GB:.2f} GB; free in {args.dir}: {free / GB:.1f} GB"
    )
    if free < 1.5 * size:
        sys.exit(f"not enough free disk in {args.dir}: need {1.5 * size / GB:.1f} GB")
    folder = Path(tempfile.mkdtemp(prefix="snnrsa_bench_things_", dir=args.dir))
    try:
        t0 = time.perf_counter()
        write_subject(folder, args.voxels)
        h5 = folder / "fmri" / "sub-01_ResponseData.h5"
        print(f"wrote {h5} ({h5.stat().st_size / GB:.2f} GB) in {time.perf_counter() - t0:.0f} s")
        for selection, zscore in RUNS:
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(folder), selection, zscore],
                check=True,
                stdout=subprocess.PIPE,
                text=True,
            )
            print(out.stdout.strip())
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(
            f"peak RSS over all children: {peak:.0f} MB (target < 1500 MB): "
            f"{'PASS' if peak < 1500 else 'FAIL'}"
        )
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Benchmark of the RSA engine against rsatoolbox 0.3.2 (issue 4), one line per case.

    python tools/bench_rsa.py            # the issue's sizes (a few minutes; rsatoolbox dominates)
    python tools/bench_rsa.py --quick    # small sizes, to check the script itself

Columns: case, snnrsa_s, reference_s (rsatoolbox), ratio (reference / snnrsa), max_abs_diff
(snnrsa vs rsatoolbox on the same inputs and resamples), then matmul_s (one float32 X @ X.T of
the same shape) and peak_MB (tracemalloc peak of snnrsa's own allocations, input excluded) for
the RDM cases. Where rsatoolbox would take too long, it is timed on a documented fraction
(`ref_fraction` resamples, or 1/20 of the features) and extrapolated linearly; the line says so.

(a) correlation RDM of 720 x 20,000 and 720 x 400,000 float32 features. The 400,000-feature
    matrix is 20 copies of the 20,000-feature one side by side, streamed block by block, so its
    exact RDM is the 20,000-feature RDM and rsatoolbox's answer for it is known.
Cases (b) and (c) are timed with one thread and with every usable core (`n_jobs`); rsatoolbox
runs single-threaded either way. The two are timed in turn within one run, so a ratio compares
them under the same load; for a clean one-thread figure run it as `taskset -c 0 python ...`.
The header prints what the speed depends on (CPU, SIMD levels numpy dispatches to, numba's
target, thread counts, which kernels run), so a slow machine is diagnosable from the output.

(b) 1,000-resample stimulus bootstrap of per-subject Spearman rho, 720 stimuli, 4 layers x 6 ROIs
    x 3 subjects; reference: the loop body of rsatoolbox's eval_bootstrap_pattern
    (bootstrap_sample_pattern, subsample_pattern, compare) per ROI, resamples from
    np.random.seed(0) (snnrsa draws the same ones with bootstrap_indices).
(c) LOSO noise ceiling (Spearman; 3 subjects, 720 stimuli) on 1,000 stimulus resamples;
    reference: bootstrap_sample_pattern + boot_noise_ceiling per resample, as rsatoolbox's
    eval_bootstrap_pattern computes it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np
from rsatoolbox.data import Dataset
from rsatoolbox.inference import boot_noise_ceiling
from rsatoolbox.inference.bootstrap import bootstrap_sample_pattern
from rsatoolbox.model import ModelFixed
from rsatoolbox.rdm import RDMs, calc_rdm
from rsatoolbox.rdm import compare as rsa_compare
from scipy.spatial.distance import pdist

from snnrsa.rsa import (
    bootstrap_indices,
    bootstrap_noise_ceiling,
    bootstrap_score,
    compute_rdm,
    streamed_rdm,
)


def machine_lines() -> list[str]:
    """What the timings depend on: CPU, SIMD numpy dispatches to, numba's target, threads, kernels."""
    import llvmlite
    import llvmlite.binding as llvm
    import numba
    from numpy._core._multiarray_umath import __cpu_features__

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    simd = [k for k in ("AVX2", "FMA3", "AVX512F", "AVX512_SKX", "AVX512_ICL", "AVX512_SPR")
            if __cpu_features__.get(k)]  # fmt: skip
    sort = "AVX-512" if __cpu_features__.get("AVX512_SKX") else "AVX2" if simd else "scalar"
    llvm_feats = llvm.get_host_cpu_features()
    vec = [k for k in ("avx2", "fma", "avx512f", "avx512vl") if llvm_feats.get(k)]
    return [
        f"# cpu {cpu}; {os.cpu_count()} cores, {len(os.sched_getaffinity(0))} usable; "
        f"load average {os.getloadavg()[0]:.2f} at start",
        f"# numpy {np.__version__}: SIMD {' '.join(simd) or 'none'} (np.sort / argsort dispatch "
        f"x86-simd-sort {sort}; used only once per RDM here)",
        f"# numba {numba.__version__} / llvmlite {llvmlite.__version__}: target "
        f"{numba.config.CPU_NAME or llvm.get_host_cpu_name()} ({' '.join(vec) or 'no AVX'}); "
        f"kernels njit(nogil), no parallel, no fastmath",
        "# per resample: ranks = one pass per RDM in its fixed sorted order (no sort); LOSO pooled "
        "ranks = LSD radix sort (11-bit digits); products = fixed-order sums (no BLAS), so numbers "
        "do not depend on machine or threads",
        f"# threads: n_jobs=1 runs one thread (no BLAS underneath); n_jobs=None runs "
        f"{len(os.sched_getaffinity(0))} resample threads",
    ]


HEADER = f"{'case':<34}{'snnrsa_s':>10}{'reference_s':>13}{'ratio':>9}{'max_abs_diff':>14}"


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """Best wall time of `repeat` calls (the machine is shared) and the last result."""
    best, out = np.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def peak_mb(fn: Callable[[], Any]) -> float:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def line(case: str, ours: float, ref: float, diff: float, extra: str = "") -> None:
    print(f"{case:<34}{ours:>10.3f}{ref:>13.2f}{ref / ours:>9.1f}{diff:>14.2e}{extra}", flush=True)


def tiled_matmul_time(a: np.ndarray, tiles: int) -> float:
    """Time of X @ X.T for X = `tiles` copies of `a` side by side (X is freed on return)."""
    x = np.tile(a, tiles)
    return timed(lambda: x @ x.T)[0]


def case_a(n: int, features: int, tiles: int) -> None:
    rng = np.random.default_rng(0)
    a = np.maximum(rng.standard_normal((n, features), dtype=np.float32) + 0.3, 0)
    a += rng.standard_normal((n, 1), dtype=np.float32)  # per-image offsets, as in pooled maps
    ref_t, ref = timed(lambda: calc_rdm(Dataset(a.astype(np.float64)), "correlation"))
    ref = ref.get_matrices()[0]
    ours_t, ours = timed(lambda: compute_rdm(a), repeat=3)
    mm_t, _ = timed(lambda: a @ a.T, repeat=3)
    mem = peak_mb(lambda: compute_rdm(a))
    extra = f"  matmul_s {mm_t:.3f}  peak_MB {mem:.0f}"
    line(f"a  corr RDM {n}x{features}", ours_t, ref_t, np.abs(ours - ref).max(), extra)

    def stream() -> np.ndarray:
        return streamed_rdm(a for _ in range(tiles))

    big_t, big = timed(stream, repeat=2)
    mem = peak_mb(stream)
    mm_t = tiled_matmul_time(a, tiles)
    extra = f"  matmul_s {mm_t:.3f}  peak_MB {mem:.0f}  (reference x{tiles} extrapolated)"
    line(
        f"a  corr RDM {n}x{features * tiles} streamed",
        big_t,
        ref_t * tiles,
        np.abs(big - ref).max(),
        extra,
    )


def synthetic_rdms(n: int, k: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    base = rng.standard_normal((n, 40))
    return np.array(
        [pdist(base + noise * rng.standard_normal((n, 40)), "correlation") for _ in range(k)]
    )


def case_b(n: int, n_boot: int, ref_fraction: int) -> None:
    rng = np.random.default_rng(1)
    layers = synthetic_rdms(n, 4, 3.0, rng)
    brains = synthetic_rdms(n, 18, 2.0, rng).reshape(6, 3, -1)
    idx = bootstrap_indices(n, n_boot, seed=0)
    bootstrap_score(layers, brains, indices=idx[:2])  # compile the kernels outside the timing
    runs = {j: timed(lambda j=j: bootstrap_score(layers, brains, indices=idx, n_jobs=j)) for j in (1, None)}
    models = [ModelFixed(f"layer{k}", RDMs(v[None])) for k, v in enumerate(layers)]
    ref = np.empty((ref_fraction, 4, 6))
    t = time.perf_counter()
    for roi in range(6):
        data = RDMs(brains[roi])
        np.random.seed(0)
        for i in range(ref_fraction):
            sample, pattern_idx = bootstrap_sample_pattern(data, "index")
            for j, model in enumerate(models):
                pred = model.predict_rdm().subsample_pattern("index", pattern_idx)
                ref[i, j, roi] = np.mean(rsa_compare(pred, sample, "spearman"))
    ref_t = (time.perf_counter() - t) * n_boot / ref_fraction
    resample_lines(f"b  bootstrap rho x{n_boot} ({n} stim)", runs, ref, ref_t, n_boot)


def resample_lines(case: str, runs: dict, ref: np.ndarray, ref_t: float, n_boot: int) -> None:
    """One line per thread count; the reference's resamples are the first len(ref) of ours."""
    for n_jobs, (ours_t, ours) in runs.items():
        threads = n_jobs or len(os.sched_getaffinity(0))
        note = f"  {threads} thread(s)  (reference: {len(ref)} of {n_boot} resamples, extrapolated)"
        line(case, ours_t, ref_t, np.abs(ours[: len(ref)] - ref).max(), note)


def case_c(n: int, n_boot: int, ref_fraction: int) -> None:
    subjects = synthetic_rdms(n, 3, 2.0, np.random.default_rng(2))
    bootstrap_noise_ceiling(subjects, "spearman", n_boot=2)
    runs = {
        j: timed(lambda j=j: bootstrap_noise_ceiling(subjects, "spearman", n_boot=n_boot, n_jobs=j))
        for j in (1, None)
    }
    data = RDMs(subjects)
    ref = np.empty((ref_fraction, 2))
    np.random.seed(0)
    t = time.perf_counter()
    for i in range(ref_fraction):
        sample, _ = bootstrap_sample_pattern(data, "index")
        ref[i] = boot_noise_ceiling(sample, method="spearman")
    ref_t = (time.perf_counter() - t) * n_boot / ref_fraction
    resample_lines(f"c  LOSO ceiling x{n_boot} ({n} stim)", runs, ref, ref_t, n_boot)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to test the script")
    args = parser.parse_args()
    n, feats, tiles, n_boot, frac = (
        (120, 2000, 5, 40, 4) if args.quick else (720, 20000, 20, 1000, 20)
    )
    print("\n".join(machine_lines()))
    print(HEADER)
    case_a(n, feats, tiles)
    case_b(n, n_boot, frac)
    case_c(n, n_boot, frac)
    print(f"# load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()

"""Figures of an STDP run (``experiment=stdp_dynamics``): receptive-field evolution, dynamics
curves and RSA against training images.

    python tools/stdp_figures.py <run dir> [<run dir> ...] [--out DIR]

Per run (written to ``<run dir>/figures`` unless ``--out``):
- ``rf_probe_<k>.png``: the Conv1 receptive fields (on minus off for a DoG front end) at probe k,
  titled with the training images seen and the mean orientation index; ``rf_evolution.png``: all
  probes, one row each;
- ``dynamics.png``: per layer against training images, from the probes in results.h5: C, mean
  weight, share at the bounds, firing rate, distinct WTA winners, share of silent features, mean
  |Δw| since the previous probe, Conv1 orientation index; plus the per-batch C / rate / winners /
  silent share from ``rule_log.csv`` when present;
- ``rsa_vs_images.png``: ρ of each read-out layer against each ROI (mean over subjects) against
  training images, from ``dynamics_rsa.csv``.
Several run dirs (a sweep over a⁺/a⁻, thresholds, k, τ) also give ``sweep_*.png`` in ``--out``
overlaying the runs' C, firing rate and ρ curves.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

SCALARS = ["C", "w_mean", "at_bounds", "rate", "winners", "silent", "dw_mean_abs"]


def read_probes(run: Path) -> list[dict]:
    """Probe snapshots from ``results.h5``: attributes ``images``, ``epoch`` and the arrays."""
    path = run / "results.h5"
    if not path.exists():
        return []
    with h5py.File(path, "r") as f:
        if "dynamics" not in f:
            return []
        return [{"images": int(g.attrs["images"]), "epoch": float(g.attrs["epoch"]),
                 **{k: g[k][()] for k in g}} for _, g in sorted(f["dynamics"].items())]


def rf_grid(ax_row: list, rf: np.ndarray) -> None:
    lim = float(np.abs(rf).max()) or 1.0
    for ax, r in zip(ax_row, rf):
        ax.imshow(r, cmap="RdBu_r", vmin=-lim, vmax=lim)
    for ax in ax_row:
        ax.set_xticks([])
        ax.set_yticks([])


def plot_rfs(probes: list[dict], out: Path) -> list[Path]:
    paths = []
    for k, p in enumerate(probes):
        rf = p.get("conv1_rf")
        if rf is None:
            continue
        n = len(rf)
        cols = min(8, n)
        rows = math.ceil(n / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 0.9 + 0.5), squeeze=False)
        rf_grid(list(axes.flat), rf)
        for ax in list(axes.flat)[n:]:
            ax.axis("off")
        osi = float(np.mean(p.get("conv1_orientation_index", np.nan)))
        fig.suptitle(f"Conv1 RFs, {p['images']} images (OSI {osi:.2f})", fontsize=8)
        path = out / f"rf_probe_{k:03d}.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    with_rf = [p for p in probes if "conv1_rf" in p]
    if with_rf:
        n = len(with_rf[0]["conv1_rf"])
        fig, axes = plt.subplots(len(with_rf), n, figsize=(n * 0.45, len(with_rf) * 0.5 + 0.4),
                                 squeeze=False)
        for row, p in zip(axes, with_rf):
            rf_grid(list(row), p["conv1_rf"])
            row[0].set_ylabel(str(p["images"]), fontsize=6, rotation=0, ha="right")
        fig.suptitle("Conv1 receptive fields per probe (rows: training images)", fontsize=8)
        path = out / "rf_evolution.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def layers_of(probes: list[dict]) -> list[str]:
    names = {k.split("_")[0] for p in probes for k in p if k.startswith("conv")}
    return sorted(names, key=lambda s: int(s[4:]))


def plot_dynamics(probes: list[dict], log: pd.DataFrame | None, out: Path) -> Path | None:
    if not probes and log is None:
        return None
    keys = SCALARS + ["orientation"]
    fig, axes = plt.subplots(2, 4, figsize=(13, 5.5))
    images = [p["images"] for p in probes]
    for ax, key in zip(axes.flat, keys):
        if key == "orientation":
            ys = [float(np.mean(p["conv1_orientation_index"])) for p in probes
                  if "conv1_orientation_index" in p]
            if ys:
                ax.plot(images[: len(ys)], ys, "o-", label="conv1")
            ax.set_title("Conv1 orientation index")
        else:
            for layer in layers_of(probes):
                name = f"{layer}_{key}"
                ys = [float(np.asarray(p[name])) for p in probes if name in p]
                if ys:
                    ax.plot(images[: len(ys)], ys, "o-", label=f"{layer} (probes)")
            if log is not None and key in log.columns:
                for layer, grp in log.groupby("layer"):
                    ax.plot(grp["images"], grp[key], "-", alpha=0.5, lw=1,
                            label=f"conv{int(layer) + 1} in training (batches)")
            ax.set_title(key)
        ax.set_xlabel("training images")
    axes.flat[0].legend(fontsize=6)
    axes.flat[3].legend(fontsize=6)
    fig.tight_layout()
    path = out / "dynamics.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def score_column(df: pd.DataFrame) -> str:
    for name in ("rho", "score", "r", "spearman"):
        if name in df.columns:
            return name
    raise KeyError(f"no score column in {list(df.columns)}")


def rsa_curves(run: Path) -> pd.DataFrame | None:
    path = run / "dynamics_rsa.csv"
    if not path.exists():
        return None
    df = pd.read_csv(path)
    col = score_column(df)
    return df.groupby(["layer", "roi", "images"], as_index=False)[col].mean().rename(
        columns={col: "rho"})


def plot_rsa(curves: pd.DataFrame, out: Path, name: str = "rsa_vs_images.png") -> Path:
    layers = sorted(curves["layer"].unique())
    fig, axes = plt.subplots(1, len(layers), figsize=(4 * len(layers), 3.2), squeeze=False)
    for ax, layer in zip(axes[0], layers):
        for roi, grp in curves[curves["layer"] == layer].groupby("roi", sort=False):
            ax.plot(grp["images"], grp["rho"], "o-", label=roi)
        ax.set_title(layer)
        ax.set_xlabel("training images")
        ax.set_ylabel("ρ (mean over subjects)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path = out / name
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_sweep(runs: list[Path], out: Path) -> list[Path]:
    """Overlay of several runs: C and firing rate per layer (probes), ρ per layer (ROI mean)."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    for run in runs:
        probes = read_probes(run)
        images = [p["images"] for p in probes]
        for layer in layers_of(probes):
            for ax, key in zip(axes[:2], ("C", "rate")):
                ys = [float(np.asarray(p[f"{layer}_{key}"])) for p in probes
                      if f"{layer}_{key}" in p]
                ax.plot(images[: len(ys)], ys, "o-", label=f"{run.name} {layer}")
        curves = rsa_curves(run)
        if curves is not None:
            for layer, grp in curves.groupby("layer"):
                mean = grp.groupby("images")["rho"].mean()
                axes[2].plot(mean.index, mean.values, "o-", label=f"{run.name} {layer}")
    for ax, title in zip(axes, ("C", "firing rate", "ρ (mean over ROIs)")):
        ax.set_title(title)
        ax.set_xlabel("training images")
    axes[2].legend(fontsize=6)
    fig.tight_layout()
    path = out / "sweep_dynamics.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]


def figures(run: Path, out: Path | None = None) -> list[Path]:
    out = out or run / "figures"
    out.mkdir(parents=True, exist_ok=True)
    probes = read_probes(run)
    log_path = run / "rule_log.csv"
    log = pd.read_csv(log_path) if log_path.exists() else None
    paths = plot_rfs(probes, out)
    p = plot_dynamics(probes, log, out)
    paths += [p] if p else []
    curves = rsa_curves(run)
    if curves is not None and len(curves):
        paths.append(plot_rsa(curves, out))
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    for run in args.runs:
        out = args.out / run.name if args.out and len(args.runs) > 1 else args.out
        for path in figures(run, out):
            print(path)
    if len(args.runs) > 1:
        out = args.out or args.runs[0].parent / "sweep_figures"
        out.mkdir(parents=True, exist_ok=True)
        for path in plot_sweep(args.runs, out):
            print(path)


if __name__ == "__main__":
    main()

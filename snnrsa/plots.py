"""Figures of a run: RSA trajectories (rho against epoch, one panel per ROI, a line per layer)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from snnrsa.store import write_atomic  # noqa: E402


def plot_trajectory(rsa: pd.DataFrame, path: Path) -> None:
    """Subject-mean Spearman rho against epoch with the subject SD as a band."""
    rois = list(dict.fromkeys(rsa["roi"]))
    layers = list(dict.fromkeys(rsa["layer"]))
    ncol = min(3, len(rois))
    nrow = -(-len(rois) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.2 * nrow), squeeze=False,
                             sharex=True)
    stats = rsa.groupby(["roi", "layer", "epoch"])["rho"].agg(["mean", "std"]).reset_index()
    for ax, roi in zip(axes.flat, rois):
        for layer in layers:
            s = stats[(stats.roi == roi) & (stats.layer == layer)].sort_values("epoch")
            ax.plot(s["epoch"], s["mean"], marker="o", ms=3, label=layer)
            ax.fill_between(s["epoch"], s["mean"] - s["std"].fillna(0),
                            s["mean"] + s["std"].fillna(0), alpha=0.15)
        ax.axhline(0, color="0.6", lw=0.6)
        ax.set_title(roi)
        ax.set_xlabel("epoch")
        ax.set_ylabel("Spearman ρ (subject mean ± SD)")
    for ax in list(axes.flat)[len(rois):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8)
    first = rsa.iloc[0]
    fig.suptitle(f"rule={first['rule']} neuron={first['neuron']} encoding={first['encoding']} "
                 f"seed={first['seed']}", fontsize=10)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)

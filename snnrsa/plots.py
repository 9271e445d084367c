"""Figures of a run: RSA trajectories (rho against epoch, one panel per ROI, a line per layer)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from snnrsa.store import write_atomic  # noqa: E402


def ceiling_band(ax, lower: float, upper: float) -> None:
    """The noise ceiling as a grey band; when it lies far above the data, a note instead so that
    the data stay legible."""
    y0, y1 = ax.get_ylim()
    if lower > y1 + 2 * (y1 - y0):
        ax.text(0.02, 0.97, f"noise ceiling {lower:.2f}–{upper:.2f} (above)",
                transform=ax.transAxes, va="top", fontsize=7, color="0.4")
        return
    ax.axhspan(lower, upper, color="0.85", zorder=0, label="noise ceiling")


def plot_trajectory(rsa: pd.DataFrame, path: Path, ceil: pd.DataFrame | None = None) -> None:
    """Subject-mean Spearman rho against epoch with the subject SD as a band, and each ROI's
    LOSO noise ceiling (``ceil``: roi, lower, upper) as a grey band."""
    from snnrsa.brain import roi_order

    rois = roi_order(rsa["roi"].unique())
    bounds = {} if ceil is None else {r.roi: (r.lower, r.upper) for r in ceil.itertuples()}
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
        if roi in bounds:
            ceiling_band(ax, *bounds[roi])
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

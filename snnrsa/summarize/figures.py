"""PNG + PDF figures: trajectories per ROI with noise-ceiling bands, key comparisons."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from snnrsa.summarize.loading import (
    CONVENTIONS,
    UNTRAINED,
    roi_order,
    rule_order,
)
from snnrsa.summarize.report import (
    key_roi,
)
from snnrsa.summarize.statistics import (
    by_seed,
)


def _symlog_epochs(ax, epochs: Sequence[int]) -> None:
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xticks(list(epochs))
    ax.set_xticklabels([str(e) for e in epochs])
    ax.minorticks_off()
    ax.set_xlabel("epoch")


def _ceiling_band(ax, ceil: pd.DataFrame, roi: str) -> None:
    """Noise-ceiling band; when it lies far above the data, a note instead (data stay legible)."""
    c = ceil[ceil.roi == roi]
    if not len(c):
        return
    lo, up = float(c.lower.iloc[0]), float(c.upper.iloc[0])
    y0, y1 = ax.get_ylim()
    if lo > y1 + 2 * (y1 - y0):
        ax.text(0.02, 0.97, f"noise ceiling {lo:.2f}–{up:.2f} (above)", transform=ax.transAxes,
                va="top", fontsize=7, color="0.4")
        return
    ax.axhspan(lo, up, color="0.85", zorder=0, label="noise ceiling")


def _trajectory(ax, traj: pd.DataFrame, roi: str, conv: str, colors: dict, ceil: pd.DataFrame,
                epochs: Sequence[int]) -> None:
    t = traj[(traj.convention == conv) & (traj.roi == roi)]
    for rule, g in t.groupby("rule", sort=False):
        g = g.sort_values("epoch")
        if rule.split("|")[0] == UNTRAINED:
            ax.axhline(float(g["mean"].iloc[0]), ls="--", color=colors[rule], label=rule)
            continue
        sd = g["sd"].fillna(0).to_numpy()
        ax.plot(g.epoch, g["mean"], marker="o", ms=3, color=colors[rule], label=rule)
        ax.fill_between(g.epoch, g["mean"] - sd, g["mean"] + sd, color=colors[rule], alpha=0.2)
    _ceiling_band(ax, ceil, roi)
    _symlog_epochs(ax, epochs)
    ax.set_title(f"{roi} ({conv.replace('_', ' ')})")
    ax.set_ylabel("Spearman ρ")


def make_figures(out: Path, scores: pd.DataFrame, traj: pd.DataFrame, dlt: pd.DataFrame,
                 ceil: pd.DataFrame, reference: str = "bp") -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rules = rule_order(traj.rule.unique(), reference)
    cmap = plt.get_cmap("tab10")
    colors = {r: cmap(i % 10) for i, r in enumerate(rules)}
    rois = roi_order(traj.roi.unique())
    roi = key_roi(rois)
    other = key_roi(rois, ("LOC", "IT", "hV4")) if len(rois) > 1 else roi
    epochs = sorted(traj.epoch.unique())
    convs = [c for c in CONVENTIONS if (traj.convention == c).any()]
    written: list[str] = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        for ext in ("png", "pdf"):
            fig.savefig(out / f"{name}.{ext}", dpi=150)
        plt.close(fig)
        written.extend([f"{name}.png", f"{name}.pdf"])

    # 1. key-ROI trajectory, both conventions
    fig, axes = plt.subplots(1, len(convs), figsize=(5 * len(convs), 3.8), squeeze=False)
    for ax, conv in zip(axes[0], convs):
        _trajectory(ax, traj, roi, conv, colors, ceil, epochs)
    axes[0, -1].legend(fontsize=7, loc="best")
    save(fig, f"{roi.lower()}_trajectory")

    # 2. delta panel: vs epoch 0 and vs untrained (best layer)
    d = dlt[(dlt.convention == "best_layer") & (dlt.roi == roi)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, (col, title) in zip(axes, (("delta_epoch0", "Δρ vs epoch 0"),
                                       ("delta_untrained", "Δρ vs untrained"))):
        for rule, g in d.groupby("rule", sort=False):
            if rule.split("|")[0] == UNTRAINED or g[col].isna().all():
                continue
            g = g.sort_values("epoch")
            sd = g[f"{col}_sd"].fillna(0).to_numpy()
            ax.plot(g.epoch, g[col], marker="o", ms=3, color=colors[rule], label=rule)
            ax.fill_between(g.epoch, g[col] - sd, g[col] + sd, color=colors[rule], alpha=0.2)
        ax.axhline(0, color="k", lw=0.8)
        _symlog_epochs(ax, epochs)
        ax.set_title(f"{roi}: {title} (best layer)")
        ax.set_ylabel("Δρ")
    axes[0].legend(fontsize=7)
    save(fig, f"{roi.lower()}_delta")

    # 3. last-epoch bars with seed points, every ROI
    s = by_seed(scores)
    s = s[s.convention == "best_layer"]
    fig, axes = plt.subplots(1, len(rois), figsize=(2.6 * len(rois) + 1, 3.6), squeeze=False)
    for ax, r in zip(axes[0], rois):
        g = s[s.roi == r]
        for i, rule in enumerate(rules):
            gr = g[g.rule == rule]
            if not len(gr):
                continue
            gl = gr[gr.epoch == gr.epoch.max()]
            ax.bar(i, gl.rho.mean(), color=colors[rule], alpha=0.6)
            jitter = np.linspace(-0.15, 0.15, len(gl)) if len(gl) > 1 else [0.0]
            ax.scatter(i + np.asarray(jitter), gl.rho, color="k", s=8, zorder=3)
        _ceiling_band(ax, ceil, r)
        ax.set_xticks(range(len(rules)))
        ax.set_xticklabels(rules, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{r}, last epoch")
    axes[0, 0].set_ylabel("Spearman ρ (best layer)")
    save(fig, "last_epoch_bars")

    # 4. all ROIs, both conventions
    fig, axes = plt.subplots(len(convs), len(rois), figsize=(3.2 * len(rois), 3 * len(convs)),
                             squeeze=False)
    for i, conv in enumerate(convs):
        for j, r in enumerate(rois):
            if (traj[(traj.convention == conv)].roi == r).any():
                _trajectory(axes[i, j], traj, r, conv, colors, ceil, epochs)
            else:
                axes[i, j].set_visible(False)
    axes[0, -1].legend(fontsize=6, loc="lower left")
    save(fig, "all_rois")

    # 5. key ROI against a higher ROI, through training
    t = traj[traj.convention == "best_layer"]
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    for rule in rules:
        a = t[(t.rule == rule) & (t.roi == roi)].set_index("epoch")["mean"]
        b = t[(t.rule == rule) & (t.roi == other)].set_index("epoch")["mean"]
        common = sorted(set(a.index) & set(b.index))
        if not common:
            continue
        ax.plot(a.loc[common], b.loc[common], marker="o", ms=3, color=colors[rule], label=rule)
        ax.annotate(str(common[-1]), (a.loc[common[-1]], b.loc[common[-1]]), fontsize=6)
    ax.set_xlabel(f"{roi} ρ")
    ax.set_ylabel(f"{other} ρ")
    ax.set_title(f"{roi} against {other} (best layer; label: last epoch)")
    ax.legend(fontsize=7)
    save(fig, f"{roi.lower()}_vs_{other.lower()}")

    # 6. seed variability: each seed's key-ROI trajectory
    trained = [r for r in rules if r.split("|")[0] != UNTRAINED]
    fig, axes = plt.subplots(1, max(1, len(trained)), figsize=(3.2 * max(1, len(trained)), 3.2),
                             squeeze=False, sharey=True)
    for ax, rule in zip(axes[0], trained):
        g = s[(s.rule == rule) & (s.roi == roi)]
        for seed, gs in g.groupby("seed"):
            gs = gs.sort_values("epoch")
            ax.plot(gs.epoch, gs.rho, marker=".", lw=1, label=f"seed {seed}")
        _symlog_epochs(ax, epochs)
        ax.set_title(f"{rule}: {roi} per seed")
    axes[0, 0].set_ylabel("Spearman ρ (best layer)")
    axes[0, -1].legend(fontsize=6)
    save(fig, "seed_variability")
    return written


# Rule diagnostics written per epoch to rule_log.csv (PC: update vs BP gradient; FA: angles),
# the y-axis label of each, and whether it is drawn on a log axis
RULE_METRICS = {"cosine_bp": ("cosine(PC update, BP gradient)", False),
                "norm_ratio_bp": ("|PC update| / |BP gradient|", True),
                "angle_signal": ("error-signal angle to BP (deg)", False),
                "angle_w_b": ("W-B angle (deg)", False)}


def rule_log_figures(out: Path, logs: pd.DataFrame) -> list[str]:
    """Per rule with diagnostics, one panel per logged metric: the seed mean per layer against
    epoch (rule_<name>_log.png/pdf)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[str] = []
    if not len(logs) or "layer" not in logs:
        return written
    for rule, g in logs.groupby("rule", sort=False):
        metrics = [m for m in RULE_METRICS if m in g and g[m].notna().any()]
        if not metrics:
            continue
        fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.4), squeeze=False)
        mean = g.groupby(["layer", "epoch"], sort=False)[metrics].mean().reset_index()
        for ax, metric in zip(axes[0], metrics):
            label, log = RULE_METRICS[metric]
            for layer, gl in mean.groupby("layer", sort=False):
                if gl[metric].notna().any():
                    ax.plot(gl.epoch, gl[metric], marker="o", ms=3, label=layer)
            if log:
                ax.set_yscale("log")
            ax.set_xlabel("epoch")
            ax.set_title(f"{rule}: {label}", fontsize=8)
        axes[0, -1].legend(fontsize=7)
        fig.tight_layout()
        for ext in ("png", "pdf"):
            fig.savefig(out / f"rule_{rule}_log.{ext}", dpi=150)
        plt.close(fig)
        written += [f"rule_{rule}_log.png", f"rule_{rule}_log.pdf"]
    return written

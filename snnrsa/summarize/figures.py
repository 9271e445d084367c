"""PNG + PDF figures: trajectories per ROI with noise-ceiling bands, key comparisons."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from snnrsa.plots import ceiling_band
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

MIN_LABEL_GAP = 0.06  # fraction of the axis width between two labelled epoch ticks
EPOCH_HALF = 2.0  # the epoch axis is log(1 + epoch / EPOCH_HALF): linear-ish below, log above


def _to_axis(epoch: np.ndarray) -> np.ndarray:
    return np.log1p(np.asarray(epoch, dtype=float) / EPOCH_HALF)


def _from_axis(pos: np.ndarray) -> np.ndarray:
    return EPOCH_HALF * np.expm1(pos)


def _epoch_axis(ax, epochs: Sequence[float]) -> None:
    """Epochs on a log(1 + epoch / 2) axis: 0 at the origin, 1 and 2 apart from it and from
    each other, and 20, 30 and 40 still apart (the study's checkpoints are spaced within 1.2x of
    each other); every epoch ticked, labels dropped where they would crowd the previous one."""
    ax.set_xscale("function", functions=(_to_axis, _from_axis))
    epochs = sorted(epochs)
    # explicit limits: autoscale's margins could reach epoch <= -2, outside the transform's domain
    lo, hi = float(_to_axis(epochs[0])), float(_to_axis(epochs[-1]))
    span = (hi - lo) or 1.0
    ax.set_xlim(float(_from_axis(lo - 0.04 * span)), float(_from_axis(hi + 0.04 * span)))
    ax.set_xticks(list(epochs))
    labels, last = [], -np.inf
    for e in epochs:
        pos = (float(_to_axis(e)) - lo) / span
        show = pos - last >= MIN_LABEL_GAP
        labels.append(f"{e:g}" if show else "")
        last = pos if show else last
    ax.set_xticklabels(labels)
    ax.tick_params(axis="x", labelsize=8)
    ax.minorticks_off()
    ax.set_xlabel("epoch")


def _ceiling_band(ax, ceil: pd.DataFrame, roi: str) -> None:
    c = ceil[ceil.roi == roi]
    if len(c):
        ceiling_band(ax, float(c.lower.iloc[0]), float(c.upper.iloc[0]))


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
    _epoch_axis(ax, epochs)
    ax.set_title(f"{roi} ({conv.replace('_', ' ')})")
    ax.set_ylabel("Spearman ρ")


@dataclass
class FigureSet:
    """What every summary figure shares: where they go, the data, rule colours, ROI choices."""

    out: Path
    scores: pd.DataFrame
    traj: pd.DataFrame
    dlt: pd.DataFrame
    ceil: pd.DataFrame
    rules: list[str]
    colors: dict
    rois: list[str]  # hierarchy order
    roi: str  # the key ROI (V1 or EVC)
    other: str  # a higher ROI to set against it
    epochs: list[int]
    convs: list[str]
    written: list[str] = field(default_factory=list)

    def save(self, fig, name: str) -> None:
        import matplotlib.pyplot as plt

        fig.tight_layout()
        for ext in ("png", "pdf"):
            fig.savefig(self.out / f"{name}.{ext}", dpi=150)
        plt.close(fig)
        self.written.extend([f"{name}.png", f"{name}.pdf"])


def make_figures(out: Path, scores: pd.DataFrame, traj: pd.DataFrame, dlt: pd.DataFrame,
                 ceil: pd.DataFrame, reference: str = "bp") -> list[str]:
    """Every summary figure (PNG + PDF); returns the file names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rules = rule_order(traj.rule.unique(), reference)
    cmap = plt.get_cmap("tab10")
    rois = roi_order(traj.roi.unique())
    roi = key_roi(rois)
    fs = FigureSet(out, scores, traj, dlt, ceil, rules,
                   {r: cmap(i % 10) for i, r in enumerate(rules)}, rois, roi,
                   key_roi(rois, ("LOC", "IT", "hV4")) if len(rois) > 1 else roi,
                   sorted(traj.epoch.unique()),
                   [c for c in CONVENTIONS if (traj.convention == c).any()])
    for draw in (key_trajectory, delta_panels, last_epoch_bars, all_rois, key_vs_other,
                 seed_variability):
        draw(fs)
    return fs.written


def key_trajectory(fs: FigureSet) -> None:
    """The key ROI's trajectory per rule, one panel per layer convention."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(fs.convs), figsize=(5 * len(fs.convs), 3.8), squeeze=False)
    for ax, conv in zip(axes[0], fs.convs):
        _trajectory(ax, fs.traj, fs.roi, conv, fs.colors, fs.ceil, fs.epochs)
    axes[0, -1].legend(fontsize=7, loc="best")
    fs.save(fig, f"{fs.roi.lower()}_trajectory")


def delta_panels(fs: FigureSet) -> None:
    """The key ROI's change against epoch 0 and against the untrained network (best layer)."""
    import matplotlib.pyplot as plt

    d = fs.dlt[(fs.dlt.convention == "best_layer") & (fs.dlt.roi == fs.roi)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, (col, title) in zip(axes, (("delta_epoch0", "Δρ vs epoch 0"),
                                       ("delta_untrained", "Δρ vs untrained"))):
        for rule, g in d.groupby("rule", sort=False):
            if rule.split("|")[0] == UNTRAINED or g[col].isna().all():
                continue
            g = g.sort_values("epoch")
            sd = g[f"{col}_sd"].fillna(0).to_numpy()
            ax.plot(g.epoch, g[col], marker="o", ms=3, color=fs.colors[rule], label=rule)
            ax.fill_between(g.epoch, g[col] - sd, g[col] + sd, color=fs.colors[rule], alpha=0.2)
        ax.axhline(0, color="k", lw=0.8)
        _epoch_axis(ax, fs.epochs)
        ax.set_title(f"{fs.roi}: {title} (best layer)")
        ax.set_ylabel("Δρ")
    axes[0].legend(fontsize=7)
    fs.save(fig, f"{fs.roi.lower()}_delta")


def last_epoch_bars(fs: FigureSet) -> None:
    """Each ROI at each rule's last epoch: seed mean as a bar, seeds as points, the ceiling."""
    import matplotlib.pyplot as plt

    s = by_seed(fs.scores)
    s = s[s.convention == "best_layer"]
    fig, axes = plt.subplots(1, len(fs.rois), figsize=(2.6 * len(fs.rois) + 1, 3.6),
                             squeeze=False)
    for ax, r in zip(axes[0], fs.rois):
        g = s[s.roi == r]
        for i, rule in enumerate(fs.rules):
            gr = g[g.rule == rule]
            if not len(gr):
                continue
            gl = gr[gr.epoch == gr.epoch.max()]
            ax.bar(i, gl.rho.mean(), color=fs.colors[rule], alpha=0.6)
            jitter = np.linspace(-0.15, 0.15, len(gl)) if len(gl) > 1 else [0.0]
            ax.scatter(i + np.asarray(jitter), gl.rho, color="k", s=8, zorder=3)
        _ceiling_band(ax, fs.ceil, r)
        ax.set_xticks(range(len(fs.rules)))
        ax.set_xticklabels(fs.rules, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{r}, last epoch")
    axes[0, 0].set_ylabel("Spearman ρ (best layer)")
    fs.save(fig, "last_epoch_bars")


def all_rois(fs: FigureSet) -> None:
    """Every ROI in hierarchy order (columns) under each layer convention (rows)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(fs.convs), len(fs.rois),
                             figsize=(3.2 * len(fs.rois), 3 * len(fs.convs)), squeeze=False)
    for i, conv in enumerate(fs.convs):
        for j, r in enumerate(fs.rois):
            if (fs.traj[(fs.traj.convention == conv)].roi == r).any():
                _trajectory(axes[i, j], fs.traj, r, conv, fs.colors, fs.ceil, fs.epochs)
            else:
                axes[i, j].set_visible(False)
    axes[0, -1].legend(fontsize=6, loc="lower left")
    fs.save(fig, "all_rois")


def key_vs_other(fs: FigureSet) -> None:
    """The key ROI against a higher ROI through training (best layer)."""
    import matplotlib.pyplot as plt

    t = fs.traj[fs.traj.convention == "best_layer"]
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    for rule in fs.rules:
        a = t[(t.rule == rule) & (t.roi == fs.roi)].set_index("epoch")["mean"]
        b = t[(t.rule == rule) & (t.roi == fs.other)].set_index("epoch")["mean"]
        common = sorted(set(a.index) & set(b.index))
        if not common:
            continue
        ax.plot(a.loc[common], b.loc[common], marker="o", ms=3, color=fs.colors[rule],
                label=rule)
        ax.annotate(str(common[-1]), (a.loc[common[-1]], b.loc[common[-1]]), fontsize=6)
    ax.set_xlabel(f"{fs.roi} ρ")
    ax.set_ylabel(f"{fs.other} ρ")
    ax.set_title(f"{fs.roi} against {fs.other} (best layer; label: last epoch)")
    ax.legend(fontsize=7)
    fs.save(fig, f"{fs.roi.lower()}_vs_{fs.other.lower()}")


def seed_variability(fs: FigureSet) -> None:
    """Each seed's key-ROI trajectory, one panel per trained rule."""
    import matplotlib.pyplot as plt

    s = by_seed(fs.scores)
    s = s[s.convention == "best_layer"]
    trained = [r for r in fs.rules if r.split("|")[0] != UNTRAINED]
    fig, axes = plt.subplots(1, max(1, len(trained)), figsize=(3.2 * max(1, len(trained)), 3.2),
                             squeeze=False, sharey=True)
    for ax, rule in zip(axes[0], trained):
        g = s[(s.rule == rule) & (s.roi == fs.roi)]
        for seed, gs in g.groupby("seed"):
            gs = gs.sort_values("epoch")
            ax.plot(gs.epoch, gs.rho, marker=".", lw=1, label=f"seed {seed}")
        _epoch_axis(ax, fs.epochs)
        ax.set_title(f"{rule}: {fs.roi} per seed")
    axes[0, 0].set_ylabel("Spearman ρ (best layer)")
    axes[0, -1].legend(fontsize=6)
    fs.save(fig, "seed_variability")


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

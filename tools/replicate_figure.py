"""The README figure of the 92-image replication: EVC and IT best-layer rho against epoch, one
line per rule, the protocol's 224 px and the training resolution (32 px), with the LOSO noise
ceiling as a band.

The trajectory jobs continue the headline jobs: the cosine schedule steps once per epoch, so the
first epoch is trained alike in both and epochs 0 and 1 of a seed are the same network; each
(rule, resolution, seed, epoch) is counted once (the headline's)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from snnrsa.rsa.mapping import best_layer_scores  # noqa: E402
from snnrsa.summarize.loading import roi_order  # noqa: E402

PANELS = {"headline": "GAP read-out, 224 px (the protocol)",
          "headline_res32": "GAP read-out, 32 px (training resolution)"}
# the trajectory part runs at 224 px: it extends the headline row
EXTENDS = {"trajectory": "headline"}
RULE_ORDER = ("untrained", "bp", "fa", "pc_published", "stdp_published", "pc", "stdp", "bp_lif")


def panel_table(scores: pd.DataFrame, panel: str) -> pd.DataFrame:
    """One panel's scores, the trajectory joined to the headline row; a (rule, seed, epoch)
    both parts scored is taken from the headline."""
    t = scores[scores.part.isin([panel, *(k for k, v in EXTENDS.items() if v == panel)])]
    t = t.assign(first=t.part == panel).sort_values("first", ascending=False, kind="stable")
    return t.drop_duplicates(["rule", "seed", "epoch", "layer", "roi", "subject"])


def best_layer_seeds(scores: pd.DataFrame) -> pd.DataFrame:
    """Per panel: per-seed, subject-mean rho at the study's best layer (rule, ROI, epoch)."""
    return pd.concat([best_layer_scores(panel_table(scores, panel)).assign(panel=panel)
                      for panel in PANELS if (scores.part == panel).any()], ignore_index=True)


def best_layer_curves(scores: pd.DataFrame) -> pd.DataFrame:
    """Per panel, rule, ROI and epoch: the best layer, mean and standard error over seeds."""
    g = best_layer_seeds(scores).groupby(["panel", "rule", "roi", "epoch", "layer"]).rho
    out = g.agg(mean="mean", se=lambda v: v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1
                else np.nan, n_seeds="count")
    return out.reset_index()


def results_figure(scores: pd.DataFrame, ceilings: pd.DataFrame | None, path: Path) -> Path:
    """Rows: 224 px, 32 px; columns: EVC, IT (ROIs in hierarchy order). Epochs sit at equal
    spacing (0, 1, 2, 5, ... stay readable); error bars: SE over seeds."""
    curves = best_layer_curves(scores)
    rois = roi_order(curves.roi.unique())
    epochs = sorted(curves.epoch.unique())
    xpos = {e: i for i, e in enumerate(epochs)}
    rules = [r for r in RULE_ORDER if r in set(curves.rule)]
    colors = dict(zip(rules, plt.get_cmap("tab10").colors))
    fig, axes = plt.subplots(len(PANELS), len(rois), figsize=(4.2 * len(rois), 3.4 * len(PANELS)),
                             squeeze=False, sharex=True)
    for row, (panel, title) in enumerate(PANELS.items()):
        for col, roi in enumerate(rois):
            ax = axes[row][col]
            if ceilings is not None and roi in set(ceilings.roi):
                c = ceilings.set_index("roi").loc[roi]
                ax.axhspan(c.lower, c.upper, color="0.85", label="noise ceiling (LOSO)")
            for rule in rules:
                g = curves[(curves.panel == panel) & (curves.rule == rule) & (curves.roi == roi)]
                if g.empty:
                    continue
                g = g.sort_values("epoch")
                if rule == "untrained":  # the epoch-0 baseline, drawn across the epochs
                    ax.axhline(g["mean"].iloc[0], color=colors[rule], ls="--", lw=1.2, label=rule)
                    continue
                x = [xpos[e] for e in g.epoch]
                ax.errorbar(x, g["mean"], yerr=g.se.fillna(0), color=colors[rule], marker="o",
                            ms=3.5, lw=1.4, capsize=2, label=rule)
            ax.axhline(0, color="0.5", lw=0.6)
            ax.set_title(f"{roi} — {title}", fontsize=9)
            ax.set_xticks(range(len(epochs)), [str(e) for e in epochs])
            if row == len(PANELS) - 1:
                ax.set_xlabel("epoch (equal spacing)")
            if col == 0:
                ax.set_ylabel("best-layer Spearman ρ")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path

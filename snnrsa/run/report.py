"""The text tables printed at the end of a run."""

from __future__ import annotations

import pandas as pd


def summary_tables(rsa: pd.DataFrame, train: pd.DataFrame) -> str:
    """Text tables printed at the end of a run: accuracy, best-layer rho per ROI over epochs,
    and every layer x ROI at the last checkpoint (subject means)."""
    mean = rsa.groupby(["epoch", "layer", "roi"], sort=False)["rho"].mean().reset_index()
    rois = list(dict.fromkeys(rsa["roi"]))
    scored = mean.dropna(subset=["rho"])
    best = scored.loc[scored.groupby(["epoch", "roi"], sort=False)["rho"].idxmax()]
    best_tab = best.pivot(index="epoch", columns="roi", values="rho").reindex(columns=rois)
    best_layer = best.pivot(index="epoch", columns="roi", values="layer").reindex(columns=rois)
    last = mean[mean.epoch == mean.epoch.max()].pivot(index="layer", columns="roi",
                                                      values="rho")[rois]
    last = last.loc[list(dict.fromkeys(rsa["layer"]))]
    acc = train[["epoch", "train_loss", "train_acc", "test_acc"]].set_index("epoch")
    fmt = {"float_format": lambda v: f"{v:.4f}"}
    return "\n\n".join([
        "Accuracy (held-out test set):\n" + acc.to_string(**fmt),
        "Best-layer Spearman rho per ROI (subject mean):\n" + best_tab.to_string(**fmt),
        "Best layer:\n" + best_layer.to_string(),
        f"Spearman rho per layer and ROI at epoch {mean.epoch.max()} (subject mean):\n"
        + last.to_string(**fmt),
    ])

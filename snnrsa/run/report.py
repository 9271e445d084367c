"""The text tables printed at the end of a run."""

from __future__ import annotations

import pandas as pd

from snnrsa.brain import roi_order


def summary_tables(rsa: pd.DataFrame, train: pd.DataFrame,
                   ceil: pd.DataFrame | None = None) -> str:
    """Text tables printed at the end of a run: accuracy, best-layer rho per ROI over epochs
    with each ROI's LOSO noise ceiling beneath (``ceil``: roi, lower, upper), and every layer x
    ROI at the last checkpoint (subject means); ROIs in hierarchy order."""
    mean = rsa.groupby(["epoch", "layer", "roi"], sort=False)["rho"].mean().reset_index()
    rois = roi_order(rsa["roi"].unique())
    scored = mean.dropna(subset=["rho"])
    best = scored.loc[scored.groupby(["epoch", "roi"], sort=False)["rho"].idxmax()]
    best_tab = best.pivot(index="epoch", columns="roi", values="rho").reindex(columns=rois)
    best_layer = best.pivot(index="epoch", columns="roi", values="layer").reindex(columns=rois)
    last = mean[mean.epoch == mean.epoch.max()].pivot(index="layer", columns="roi",
                                                      values="rho")[rois]
    last = last.loc[list(dict.fromkeys(rsa["layer"]))]
    acc = train[["epoch", "train_loss", "train_acc", "test_acc"]].set_index("epoch")
    fmt = {"float_format": lambda v: f"{v:.4f}"}
    tables = ["Accuracy (held-out test set):\n" + acc.to_string(**fmt),
              "Best-layer Spearman rho per ROI (subject mean):\n" + best_tab.to_string(**fmt)]
    if ceil is not None and len(ceil):
        bounds = ceil.set_index("roi")[["lower", "upper"]].T.reindex(
            columns=[r for r in rois if r in set(ceil.roi)])
        bounds.columns.name = "roi"
        tables.append("Noise ceiling per ROI (leave-one-subject-out, per-subject Spearman; "
                      "the best a model can score given the subjects' disagreement):\n"
                      + bounds.to_string(**fmt))
    return "\n\n".join([
        *tables,
        "Best layer:\n" + best_layer.to_string(),
        f"Spearman rho per layer and ROI at epoch {mean.epoch.max()} (subject mean):\n"
        + last.to_string(**fmt),
    ])

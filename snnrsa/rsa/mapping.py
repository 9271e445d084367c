"""Layer -> ROI mapping on a long score table (rule, layer, roi, subject, seed, epoch, rho).

The study picks, per rule, ROI and epoch, the layer with the highest seed- and subject-mean score,
then reports per-seed values at that layer; that mixes layers across epochs (defect 5), so a fixed
layer -> ROI map and a per-seed choice are offered beside it. Ties go to the layer listed first in
the table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

SCORE_COLUMNS = ("rule", "layer", "roi", "subject", "seed", "epoch", "rho")
GROUP = ("rule", "roi", "epoch")


def _check(table: pd.DataFrame, score: str) -> pd.DataFrame:
    need = [c for c in SCORE_COLUMNS if c != "rho"] + [score]
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise ValueError(f"score table lacks columns {missing}; it has {list(table.columns)}")
    if table[score].isna().any():
        raise ValueError(f"column {score!r} contains NaN scores")
    return table


def _seed_means(table: pd.DataFrame, score: str) -> pd.DataFrame:
    """Subject-mean score per (rule, roi, epoch, layer, seed), layers in order of appearance."""
    return table.groupby(list(GROUP) + ["layer", "seed"], sort=False, as_index=False)[score].mean()


def best_layer(table: pd.DataFrame, score: str = "rho") -> pd.DataFrame:
    """Per (rule, roi, epoch): the layer maximising the seed- and subject-mean score, and that mean."""
    seeds = _seed_means(_check(table, score), score)
    means = seeds.groupby(list(GROUP) + ["layer"], sort=False, as_index=False)[score].mean()
    best = means.loc[means.groupby(list(GROUP), sort=False)[score].idxmax()]
    return best.reset_index(drop=True)


def best_layer_scores(table: pd.DataFrame, score: str = "rho") -> pd.DataFrame:
    """Per-seed (subject-mean) scores at the study's best layer: rule, roi, epoch, layer, seed."""
    seeds = _seed_means(_check(table, score), score)
    chosen = best_layer(table, score)[list(GROUP) + ["layer"]]
    return seeds.merge(chosen, on=list(GROUP) + ["layer"]).reset_index(drop=True)


def per_seed_best_layer(table: pd.DataFrame, score: str = "rho") -> pd.DataFrame:
    """Per seed, the layer maximising that seed's subject-mean score, and that score."""
    seeds = _seed_means(_check(table, score), score)
    idx = seeds.groupby(list(GROUP) + ["seed"], sort=False)[score].idxmax()
    return seeds.loc[idx].reset_index(drop=True)


def fixed_layer_scores(
    table: pd.DataFrame,
    layer_map: Mapping[str, str | Sequence[str]],
    score: str = "rho",
) -> pd.DataFrame:
    """Per-seed (subject-mean) scores of the layer(s) a fixed map assigns to each ROI.

    `layer_map` maps ROI -> layer or ROI -> several layers (e.g. {"V1": ("conv1", "conv2")});
    ROIs not in the map are dropped, and a mapped (ROI, layer) absent from the table is an error.
    """
    seeds = _seed_means(_check(table, score), score)
    pairs: list[tuple[Any, Any]] = []
    for roi, layers in layer_map.items():
        for layer in (layers,) if isinstance(layers, str) else layers:
            pairs.append((roi, layer))
    wanted = pd.DataFrame(pairs, columns=["roi", "layer"])
    have = seeds[["roi", "layer"]].drop_duplicates()
    absent = wanted.merge(have, how="left", indicator=True).query("_merge == 'left_only'")
    if len(absent):
        raise ValueError(
            f"layer_map names (roi, layer) pairs absent from the table: "
            f"{list(absent[['roi', 'layer']].itertuples(index=False, name=None))}"
        )
    return seeds.merge(wanted, on=["roi", "layer"]).reset_index(drop=True)

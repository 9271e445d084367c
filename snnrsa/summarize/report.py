"""The Markdown report: key tables and the tests."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from snnrsa.summarize.loading import (
    CONVENTIONS,
    DEFAULT_FIXED_MAP,
    roi_order,
    rule_order,
)


def _fmt(v: float, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}"


def _md_table(df: pd.DataFrame, digits: int = 4) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        cells = [_fmt(v, digits) if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def key_roi(rois: Sequence[str], prefer: Sequence[str] = ("V1", "EVC")) -> str:
    for r in prefer:
        if r in rois:
            return r
    return roi_order(rois)[0]


def key_table(traj: pd.DataFrame, dlt: pd.DataFrame, roi: str, convention: str,
              reference: str = "bp") -> pd.DataFrame:
    """Per rule: rho at epoch 0, 1 and the last epoch, % change 0 -> 1, delta vs untrained (last)."""
    t = traj[(traj.convention == convention) & (traj.roi == roi)]
    d = dlt[(dlt.convention == convention) & (dlt.roi == roi)]
    rows = []
    for rule in rule_order(t.rule.unique(), reference):
        tr = t[t.rule == rule].set_index("epoch")
        dr = d[d.rule == rule].set_index("epoch")
        last = int(tr.index.max())

        def at(e: int, col: str = "mean", src: pd.DataFrame = tr) -> float:
            return float(src.loc[e, col]) if e in src.index else np.nan

        rows.append({
            "rule": rule, "rho e0": at(0), "rho e1": at(1), "last epoch": last,
            "rho last": at(last), "sd last": at(last, "sd"),
            "layers": "/".join(dict.fromkeys(tr["layer"].astype(str))),
            "% change e0→e1": at(1, "pct_epoch0", dr),
            "Δ vs untrained (last)": at(last, "delta_untrained", dr),
            "seeds": int(tr["n_seeds"].max()),
        })
    return pd.DataFrame(rows)


def write_report(out: Path, table: pd.DataFrame, traj: pd.DataFrame, dlt: pd.DataFrame,
                 tests: pd.DataFrame, ceil: pd.DataFrame, figures: Sequence[str],
                 sources: Sequence[str], reference: str = "bp") -> str:
    rois = roi_order(table.roi.unique())
    roi = key_roi(rois)
    lines = [
        "# snnrsa summary", "",
        f"Input: {len(sources)} table(s); rules {', '.join(rule_order(table.rule.unique(), reference))}; "
        f"seeds {', '.join(map(str, sorted(table.seed.unique())))}; epochs "
        f"{', '.join(map(str, sorted(table.epoch.unique())))}; ROIs {', '.join(rois)}; layers "
        f"{', '.join(dict.fromkeys(table.layer.astype(str)))}; subjects {table.subject.nunique()}.",
        "",
        "rho = Spearman between model and brain RDM per subject, averaged over subjects; "
        "mean ± SD over seeds. Best layer: per rule, ROI and epoch the layer with the highest "
        "seed-mean rho (the study). Fixed layer: "
        + ", ".join(f"{k}→{v}" for k, v in DEFAULT_FIXED_MAP.items() if k in rois) + ".",
        "",
    ]
    for conv in CONVENTIONS:
        if not (traj.convention == conv).any():
            continue
        lines += [f"## {roi}, {conv.replace('_', ' ')}", "",
                  _md_table(key_table(traj, dlt, roi, conv, reference)), ""]
    last = traj[traj.convention == "best_layer"]
    if len(last):
        idx = last.groupby(["rule", "roi"])["epoch"].transform("max") == last.epoch
        wide = last[idx].pivot_table(index="rule", columns="roi", values="mean")
        wide = wide.reindex(index=rule_order(wide.index, reference),
                            columns=[r for r in rois if r in wide.columns])
        if len(ceil):  # the ceiling beneath the scores it bounds
            bounds = ceil.set_index("roi")[["lower", "upper"]].T.reindex(columns=wide.columns)
            bounds.index = ["noise ceiling (lower)", "noise ceiling (upper)"]
            wide = pd.concat([wide, bounds])
        wide.index.name = "rule"
        lines += ["## All ROIs at each rule's last epoch (best layer, seed mean)", "",
                  _md_table(wide.reset_index()), ""]
    if len(ceil):
        lines += ["## Noise ceilings (leave-one-subject-out, per-subject Spearman)", "",
                  _md_table(ceil), ""]
    if len(tests):
        show = tests[tests.convention == "best_layer"].sort_values("p_two_sided")
        lines += [
            "## Tests (best layer; exact sign-flip over seeds; BH within family and over all)", "",
            f"{len(tests[tests.convention == 'best_layer'])} tests; the 12 smallest p. "
            "diff = mean over seeds of a − b; one-sided p tests diff > 0. With n seeds the "
            "smallest two-sided p is 2/2^n. All tests: tests.csv.", "",
            _md_table(show.head(12).drop(columns=["convention"])), ""]
    if figures:
        lines += ["## Figures", ""] + [f"- [{f}]({f})" for f in figures] + [""]
    text = "\n".join(lines)
    (out / "report.md").write_text(text)
    return text

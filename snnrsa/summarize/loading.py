"""Reading score tables: find them under run or sweep directories, check their columns, order
rules and ROIs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from snnrsa.brain import ROI_HIERARCHY, roi_order  # noqa: F401 (re-exported)

log = logging.getLogger("snnrsa.summarize")


REQUIRED = ("rule", "layer", "roi", "subject", "seed", "epoch", "rho")


CONDITION_COLUMNS = ("neuron", "encoding", "readout", "resolution", "selection", "pooling")


DEFAULT_FIXED_MAP: dict[str, str] = {
    "V1": "conv1", "V2": "conv1", "EVC": "conv1", "V3": "conv2", "hV4": "conv2",
    "LOC": "conv3", "IT": "fc1",
}


UNTRAINED = "untrained"


CONVENTIONS = ("best_layer", "fixed_layer")


TEST_COLUMNS = ["family", "rule_a", "rule_b", "roi", "epoch_a", "epoch_b", "diff", "cohens_d",
                "p_one_sided", "p_two_sided", "p_fdr_family", "p_fdr_all", "convention", "n_seeds"]


def find_tables(paths: Sequence[str | Path]) -> tuple[list[Path], list[Path]]:
    """(rsa tables, run directories) named by ``paths``: CSV files, run dirs or sweep folders."""
    tables: list[Path] = []
    runs: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_file():
            tables.append(p)
            if p.name == "rsa.csv":
                runs.append(p.parent)
        elif (p / "rsa.csv").is_file():
            tables.append(p / "rsa.csv")
            runs.append(p)
        elif p.is_dir():
            found = sorted(q for q in p.rglob("rsa.csv") if "summary" not in q.parts)
            if not found:
                raise FileNotFoundError(f"no rsa.csv under {p}")
            tables += found
            runs += [q.parent for q in found]
        else:
            raise FileNotFoundError(f"{p} is neither a file nor a folder")
    return tables, runs


def load_scores(paths: Sequence[str | Path]) -> tuple[pd.DataFrame, list[Path]]:
    """The concatenated, labelled score table and the run directories it came from."""
    tables, runs = find_tables(paths)
    frames = [pd.read_csv(t) for t in tables]
    return prepare(pd.concat(frames, ignore_index=True)), runs


def prepare(table: pd.DataFrame) -> pd.DataFrame:
    """Check columns, label rules by the condition columns that vary, drop exact duplicates."""
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise ValueError(f"score table lacks columns {missing}; it needs {list(REQUIRED)}")
    t = table.copy()
    t = t[t["rho"].notna()]
    t["rule"] = t["rule"].astype(str)
    t["epoch"] = t["epoch"].astype(int)
    varying = [c for c in CONDITION_COLUMNS if c in t.columns and t[c].nunique(dropna=False) > 1]
    for col in varying:
        prefix = "res" if col == "resolution" else ""
        t["rule"] = t["rule"] + "|" + prefix + t[col].astype(str)
    key = ["rule", "seed", "epoch", "layer", "roi", "subject"]
    dup = t.duplicated(key, keep="last")
    if dup.any():
        log.warning("dropping %d duplicate rows (same rule, seed, epoch, layer, roi, subject); "
                    "the last one read is kept", int(dup.sum()))
        t = t[~dup]
    return t.reset_index(drop=True)


def rule_order(rules: Sequence[str], reference: str = "bp") -> list[str]:
    """untrained first, then the reference rule, then the rest in sorted order."""
    def key(r: str) -> tuple[int, str]:
        base = r.split("|")[0]
        return (0 if base == UNTRAINED else 1 if base == reference else 2, r)

    return sorted(set(rules), key=key)


def by_hierarchy(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``frame`` sorted by ``columns`` with its ``roi`` column in hierarchy order."""
    order = {r: i for i, r in enumerate(roi_order(frame["roi"].unique()))} if len(frame) else {}
    return frame.sort_values(list(columns), key=lambda s: s.map(order) if s.name == "roi" else s,
                             kind="stable").reset_index(drop=True)


def rule_logs(runs: Sequence[Path]) -> pd.DataFrame:
    """Every run's ``rule_log.csv`` (rule diagnostics, rows labelled by rule and seed), joined."""
    frames = [pd.read_csv(r / "rule_log.csv") for r in runs if (r / "rule_log.csv").is_file()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

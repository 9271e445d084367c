"""``snnrsa-summarize``: a sweep's scores -> tables, tests, a Markdown report and figures.

Input: run directories (holding ``rsa.csv``), sweep folders (searched for ``rsa.csv``), or any long
CSV table with columns ``rule, layer, roi, subject, seed, epoch, rho`` (extra columns allowed).
Where condition columns (``neuron, encoding, readout, resolution, selection``) vary inside the
input, the rule label gains them (``bp|snntorch_lif|poisson``) so different set-ups never mix.

Output in ``summary/``:

- ``trajectories.csv``: rule, roi, convention, layer, epoch, mean, sd, n_seeds. Conventions:
  ``best_layer`` (the study: per rule, ROI and epoch the layer with the highest seed- and
  subject-mean rho, then that layer's per-seed values), ``fixed_layer`` (a fixed layer -> ROI map,
  default Conv1 -> V1/V2/EVC, Conv2 -> V3/hV4, Conv3 -> LOC, FC1 -> IT) and ``layer`` (every layer).
  mean and sd (ddof 1) are over seeds of the subject-mean rho.
- ``deltas.csv``: per rule, ROI, convention and epoch, the per-seed change from epoch 0 and from
  the untrained network (same seed, epoch 0), mean and sd over seeds, and the percent change.
- ``tests.csv``: family, rule_a, rule_b, roi, epoch_a, epoch_b, diff, cohens_d, p_one_sided,
  p_two_sided, p_fdr_family, p_fdr_all (plus convention, n_seeds). Every test is the exact paired
  sign-flip test over seeds of d = a - b; p_one_sided tests mean(d) > 0. Families:
  ``rule_vs_<ref>`` (a = rule, b = reference rule, both at the last epoch they share),
  ``epoch0_vs_epoch1`` (a = epoch 0, b = epoch 1, same rule: d > 0 is a loss of alignment) and
  ``trend`` (a = per-seed Spearman of rho against epoch over epochs > 0, b = 0).
  Benjamini-Hochberg within each family (p_fdr_family) and over all tests (p_fdr_all), both
  within a convention.
- ``noise_ceiling.csv`` (from the brain RDMs in the run directories' ``results.h5``:
  leave-one-subject-out lower and upper bound, per-subject Spearman; with kept session RDMs also
  the split-session ceiling ``split_r``, ``split_reliability``, ``split_ceiling``), ``report.md`` and figures
  (PNG + PDF).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from snnrsa.rsa.mapping import best_layer_scores, fixed_layer_scores
from snnrsa.rsa.stats import cohens_d_paired, fdr_bh, sign_flip_test

log = logging.getLogger("snnrsa.summarize")

REQUIRED = ("rule", "layer", "roi", "subject", "seed", "epoch", "rho")
CONDITION_COLUMNS = ("neuron", "encoding", "readout", "resolution", "selection")
DEFAULT_FIXED_MAP: dict[str, str] = {
    "V1": "conv1", "V2": "conv1", "EVC": "conv1", "V3": "conv2", "hV4": "conv2",
    "LOC": "conv3", "IT": "fc1",
}
UNTRAINED = "untrained"
CONVENTIONS = ("best_layer", "fixed_layer")
TEST_COLUMNS = ["family", "rule_a", "rule_b", "roi", "epoch_a", "epoch_b", "diff", "cohens_d",
                "p_one_sided", "p_two_sided", "p_fdr_family", "p_fdr_all", "convention", "n_seeds"]


# ----------------------------------------------------------------------------------------- input

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


def roi_order(rois: Sequence[str]) -> list[str]:
    known = ["V1", "V2", "V3", "hV4", "EVC", "LOC", "IT"]
    return sorted(set(rois), key=lambda r: (known.index(r) if r in known else len(known), r))


# ------------------------------------------------------------------------------- per-seed scores

def seed_scores(table: pd.DataFrame, fixed_map: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Per-seed, subject-mean rho: rule, roi, epoch, layer, seed, rho, convention.

    best_layer: the study's choice (seed- and subject-mean argmax per rule, ROI and epoch);
    fixed_layer: ``fixed_map`` (ROIs or layers absent from the table are left out);
    layer: every layer.
    """
    fmap = dict(DEFAULT_FIXED_MAP if fixed_map is None else fixed_map)
    have = set(map(tuple, table[["roi", "layer"]].drop_duplicates().to_numpy()))
    fmap = {roi: layer for roi, layer in fmap.items() if (roi, layer) in have}
    parts = [best_layer_scores(table).assign(convention="best_layer")]
    if fmap:
        parts.append(fixed_layer_scores(table, fmap).assign(convention="fixed_layer"))
    every = (table.groupby(["rule", "roi", "epoch", "layer", "seed"], sort=False, as_index=False)
             ["rho"].mean().assign(convention="layer"))
    parts.append(every)
    cols = ["convention", "rule", "roi", "epoch", "layer", "seed", "rho"]
    return pd.concat(parts, ignore_index=True)[cols]


def trajectories(scores: pd.DataFrame) -> pd.DataFrame:
    """Seed mean, SD (ddof 1) and count per convention, rule, ROI, layer and epoch."""
    g = scores.groupby(["rule", "roi", "convention", "layer", "epoch"], sort=False)["rho"]
    out = g.agg(mean="mean", sd=lambda s: s.std(ddof=1) if len(s) > 1 else np.nan,
                n_seeds="count").reset_index()
    return out.sort_values(["convention", "rule", "roi", "layer", "epoch"]).reset_index(drop=True)


def _by_seed(scores: pd.DataFrame) -> pd.DataFrame:
    """convention, rule, roi, epoch, seed -> rho (for best_layer/fixed_layer one layer each)."""
    s = scores[scores.convention.isin(CONVENTIONS)]
    return s.groupby(["convention", "rule", "roi", "epoch", "seed"], as_index=False)["rho"].mean()


def deltas(scores: pd.DataFrame) -> pd.DataFrame:
    """Per-seed change from epoch 0 and from the untrained network (same seed), over seeds.

    Columns: convention, rule, roi, epoch, delta_epoch0, delta_epoch0_sd, pct_epoch0,
    delta_untrained, delta_untrained_sd, n_seeds. pct_epoch0 = 100 * mean(delta) / mean(rho at 0).
    """
    s = _by_seed(scores)
    base = s[s.epoch == 0][["convention", "rule", "roi", "seed", "rho"]].rename(
        columns={"rho": "rho0"})
    unt = s[(s.rule.str.split("|").str[0] == UNTRAINED) & (s.epoch == 0)].copy()
    unt["suffix"] = unt.rule.str.partition("|")[2]
    unt = unt[["convention", "roi", "seed", "suffix", "rho"]].rename(columns={"rho": "rho_u"})
    s = s.merge(base, on=["convention", "rule", "roi", "seed"], how="left")
    s["suffix"] = s.rule.str.partition("|")[2]
    # the untrained run of the same condition suffix (e.g. resolution); else the plain untrained
    s = s.merge(unt, on=["convention", "roi", "seed", "suffix"], how="left")
    if s.rho_u.isna().any() and len(unt):
        plain = unt[unt.suffix == ""][["convention", "roi", "seed", "rho_u"]].rename(
            columns={"rho_u": "rho_u2"})
        s = s.merge(plain, on=["convention", "roi", "seed"], how="left")
        s["rho_u"] = s.rho_u.fillna(s.rho_u2)
    s["d0"] = s.rho - s.rho0
    s["du"] = s.rho - s.rho_u
    rows = []
    for key, g in s.groupby(["convention", "rule", "roi", "epoch"], sort=False):
        d0, du = g.d0.dropna(), g.du.dropna()
        m0 = g.rho0.dropna().mean()
        rows.append({
            **dict(zip(["convention", "rule", "roi", "epoch"], key)),
            "delta_epoch0": d0.mean() if len(d0) else np.nan,
            "delta_epoch0_sd": d0.std(ddof=1) if len(d0) > 1 else np.nan,
            "pct_epoch0": 100 * d0.mean() / m0 if len(d0) and m0 != 0 else np.nan,
            "delta_untrained": du.mean() if len(du) else np.nan,
            "delta_untrained_sd": du.std(ddof=1) if len(du) > 1 else np.nan,
            "n_seeds": len(g),
        })
    out = pd.DataFrame(rows)
    return out.sort_values(["convention", "rule", "roi", "epoch"]).reset_index(drop=True)


# ----------------------------------------------------------------------------------------- tests

def paired_test(a: Sequence[float], b: Sequence[float] | None = None) -> dict[str, float]:
    """diff = mean(a - b), paired Cohen's d, exact sign-flip p (one-sided: diff > 0; two-sided)."""
    a = np.asarray(a, float)
    b = np.zeros_like(a) if b is None else np.asarray(b, float)
    n = len(a)
    d = a - b
    # equal differences up to rounding: d is undefined (sd 0), not 1e15
    constant = n == 0 or float(np.ptp(d)) <= 1e-9 * max(1e-12, float(np.abs(d).max()))
    if n == 0:
        return {"diff": np.nan, "cohens_d": np.nan, "p_one_sided": np.nan, "p_two_sided": np.nan,
                "n_seeds": 0}
    return {
        "diff": float(np.mean(a - b)),
        "cohens_d": cohens_d_paired(a, b) if n >= 2 and not constant else np.nan,
        "p_one_sided": sign_flip_test(a, b, "greater").p,
        "p_two_sided": sign_flip_test(a, b, "two-sided").p,
        "n_seeds": n,
    }


def _paired(g: pd.DataFrame, where_a: pd.Series, where_b: pd.Series) -> tuple[np.ndarray, ...]:
    a = g[where_a].set_index("seed")["rho"]
    b = g[where_b].set_index("seed")["rho"]
    common = sorted(set(a.index) & set(b.index))
    return a.loc[common].to_numpy(), b.loc[common].to_numpy()


def run_tests(scores: pd.DataFrame, reference: str = "bp") -> pd.DataFrame:
    """The study's three families for each convention, with BH within family and over all."""
    s = _by_seed(scores)
    rows: list[dict] = []
    for conv, sc in s.groupby("convention", sort=False):
        rules = rule_order(sc.rule.unique(), reference)
        for roi, g in sc.groupby("roi", sort=False):
            for rule in rules:
                base = rule.split("|")[0]
                suffix = rule[len(base):]
                ref = reference + suffix
                if base in (UNTRAINED, reference) or ref not in rules:
                    continue
                shared = sorted(set(g[g.rule == rule].epoch) & set(g[g.rule == ref].epoch))
                if not shared:
                    continue
                last = shared[-1]
                a, b = _paired(g, (g.rule == rule) & (g.epoch == last),
                               (g.rule == ref) & (g.epoch == last))
                rows.append({"family": f"rule_vs_{reference}", "rule_a": rule, "rule_b": ref,
                             "roi": roi, "epoch_a": last, "epoch_b": last, **paired_test(a, b),
                             "convention": conv})
            for rule in rules:
                if rule.split("|")[0] == UNTRAINED:
                    continue
                gr = g[g.rule == rule]
                if not {0, 1} <= set(gr.epoch):
                    continue
                a, b = _paired(gr, gr.epoch == 0, gr.epoch == 1)
                rows.append({"family": "epoch0_vs_epoch1", "rule_a": rule, "rule_b": rule,
                             "roi": roi, "epoch_a": 0, "epoch_b": 1, **paired_test(a, b),
                             "convention": conv})
            for rule in rules:
                gr = g[(g.rule == rule) & (g.epoch > 0)]
                epochs = sorted(gr.epoch.unique())
                if len(epochs) < 2:
                    continue
                per_seed = []
                for _, gs in gr.groupby("seed"):
                    if gs.epoch.nunique() < 2 or gs.rho.nunique() < 2:
                        per_seed.append(0.0)  # constant: no trend
                    else:
                        per_seed.append(float(spearmanr(gs.epoch, gs.rho)[0]))
                rows.append({"family": "trend", "rule_a": rule, "rule_b": rule, "roi": roi,
                             "epoch_a": epochs[0], "epoch_b": epochs[-1],
                             **paired_test(per_seed), "convention": conv})
    tests = pd.DataFrame(rows, columns=[c for c in TEST_COLUMNS
                                        if c not in ("p_fdr_family", "p_fdr_all")])
    return adjust(tests)


def adjust(tests: pd.DataFrame) -> pd.DataFrame:
    """p_fdr_family: BH of p_two_sided within (convention, family); p_fdr_all: within convention."""
    t = tests.copy()
    t["p_fdr_family"] = np.nan
    t["p_fdr_all"] = np.nan
    if len(t):
        t["p_fdr_family"] = t.groupby(["convention", "family"], sort=False)["p_two_sided"].transform(
            lambda s: fdr_bh(s.to_numpy()))
        t["p_fdr_all"] = t.groupby("convention", sort=False)["p_two_sided"].transform(
            lambda s: fdr_bh(s.to_numpy()))
    return t[TEST_COLUMNS]


# --------------------------------------------------------------------------------- noise ceiling

SPLIT_COLUMNS = ("split_r", "split_reliability", "split_ceiling", "n_sessions")


def _split_session(session_rdms: np.ndarray) -> dict[str, float]:
    """Split-session ceiling from kept session RDMs: odd vs even sessions per subject (Spearman),
    the mean agreement Spearman-Brown corrected, and its square root (NaN when not positive)."""
    from snnrsa.brain import split_session_ceilings
    from snnrsa.rsa.ceiling import spearman_brown

    r = float(np.mean([c.split_r for c in split_session_ceilings(session_rdms, "spearman")]))
    rel = float(spearman_brown(r))
    return {"split_r": r, "split_reliability": rel,
            "split_ceiling": math.sqrt(rel) if rel > 0 else float("nan"),
            "n_sessions": session_rdms.shape[1]}


def noise_ceilings(run_dirs: Sequence[Path]) -> pd.DataFrame:
    """LOSO noise ceiling (per-subject Spearman) of each ROI's brain RDMs in results.h5, and the
    split-session ceiling where session RDMs were kept (brain=rdm_file brain.sessions=separate)."""
    import h5py

    from snnrsa.rsa.ceiling import loso_noise_ceiling

    rows: list[dict] = []
    seen: set[tuple] = set()
    for run in run_dirs:
        path = Path(run) / "results.h5"
        if not path.is_file():
            continue
        try:
            with h5py.File(path, "r") as f:
                if "brain" not in f:
                    continue
                for roi in f["brain"]:
                    if roi == "subjects":
                        continue
                    rdms = f["brain"][roi][:]
                    key = (roi, rdms.shape, float(np.nansum(rdms)))
                    if key in seen or rdms.ndim != 3 or len(rdms) < 2:
                        continue
                    seen.add(key)
                    lo, up = loso_noise_ceiling(rdms, "spearman")
                    rows.append({"roi": roi, "lower": lo, "upper": up, "n_subjects": len(rdms),
                                 "n_stimuli": rdms.shape[1], "source": str(path)})
                    if roi in f.get("brain_sessions", {}):
                        rows[-1].update(_split_session(f["brain_sessions"][roi][:]))
        except (OSError, ValueError) as err:
            log.warning("no noise ceiling from %s: %s", path, err)
    split = [c for c in SPLIT_COLUMNS if any(c in r for r in rows)]
    out = pd.DataFrame(rows, columns=["roi", "lower", "upper", "n_subjects", "n_stimuli",
                                      "source", *split])
    if out.roi.duplicated().any():
        log.warning("different brain RDMs for the same ROI across runs; ceilings are averaged")
    out = out.groupby("roi", as_index=False, sort=False).agg(
        lower=("lower", "mean"), upper=("upper", "mean"), n_subjects=("n_subjects", "first"),
        n_stimuli=("n_stimuli", "first"),
        **{c: (c, "first" if c == "n_sessions" else "mean") for c in split})
    order = roi_order(out.roi)
    return out.sort_values("roi", key=lambda s: s.map(order.index)).reset_index(drop=True)


# ---------------------------------------------------------------------------------------- report

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


# --------------------------------------------------------------------------------------- figures

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
    s = _by_seed(scores)
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


# ------------------------------------------------------------------------------------------ main

def parse_map(text: str | None) -> dict[str, str] | None:
    if not text:
        return None
    pairs = [p.split("=", 1) for p in text.split(",") if p.strip()]
    if any(len(p) != 2 for p in pairs):
        raise ValueError(f"--fixed-map wants ROI=layer,ROI=layer, got {text!r}")
    return {k.strip(): v.strip() for k, v in pairs}


def default_out(paths: Sequence[str | Path]) -> Path:
    ps = [Path(p).resolve() for p in paths]
    if len(ps) == 1:
        return (ps[0] if ps[0].is_dir() else ps[0].parent) / "summary"
    common = Path(os.path.commonpath([str(p if p.is_dir() else p.parent) for p in ps]))
    return common / "summary"


def summarize(paths: Sequence[str | Path], out: str | Path | None = None,
              fixed_map: Mapping[str, str] | None = None, reference: str = "bp",
              figures: bool = True) -> dict[str, pd.DataFrame]:
    """Read, analyse and write ``summary/``; returns the tables."""
    table, runs = load_scores(paths)
    out = Path(out) if out is not None else default_out(paths)
    out.mkdir(parents=True, exist_ok=True)
    scores = seed_scores(table, fixed_map)
    traj = trajectories(scores)
    dlt = deltas(scores)
    tests = run_tests(scores, reference)
    ceil = noise_ceilings(runs)
    traj.to_csv(out / "trajectories.csv", index=False)
    dlt.to_csv(out / "deltas.csv", index=False)
    tests.to_csv(out / "tests.csv", index=False)
    if len(ceil):
        ceil.to_csv(out / "noise_ceiling.csv", index=False)
    figs = make_figures(out, scores, traj, dlt, ceil, reference) if figures else []
    write_report(out, table, traj, dlt, tests, ceil, [f for f in figs if f.endswith(".png")],
                 [str(p) for p in paths], reference)
    return {"table": table, "scores": scores, "trajectories": traj, "deltas": dlt,
            "tests": tests, "noise_ceiling": ceil}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="snnrsa-summarize",
        description="Tables, tests, a report and figures from snnrsa run directories, sweep "
                    "folders or any long table with columns rule, layer, roi, subject, seed, "
                    "epoch, rho.")
    ap.add_argument("paths", nargs="+", help="sweep folders, run directories or CSV tables")
    ap.add_argument("-o", "--out", help="output folder (default: <input>/summary)")
    ap.add_argument("--fixed-map", help="ROI=layer pairs for the fixed-layer convention, e.g. "
                    "V1=conv1,LOC=conv3 (default: " +
                    ",".join(f"{k}={v}" for k, v in DEFAULT_FIXED_MAP.items()) + ")")
    ap.add_argument("--reference", default="bp", help="rule the others are tested against")
    ap.add_argument("--no-figures", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        res = summarize(args.paths, args.out, parse_map(args.fixed_map), args.reference,
                        not args.no_figures)
    except (FileNotFoundError, ValueError) as err:
        print(f"snnrsa-summarize: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else default_out(args.paths)
    print((out / "report.md").read_text())
    print(f"\nWritten to {out} ({len(res['tests'])} tests)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Statistics over seeds: trajectories, paired differences, exact sign-flip tests with
Benjamini-Hochberg, noise ceilings."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from snnrsa.rsa.mapping import best_layer_scores, fixed_layer_scores
from snnrsa.rsa.stats import cohens_d_paired, fdr_bh, sign_flip_test
from snnrsa.summarize.loading import (
    CONVENTIONS,
    DEFAULT_FIXED_MAP,
    TEST_COLUMNS,
    UNTRAINED,
    by_hierarchy,
    log,
    roi_order,
    rule_order,
)


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
    return by_hierarchy(out, ["convention", "rule", "roi", "layer", "epoch"])


def by_seed(scores: pd.DataFrame) -> pd.DataFrame:
    """convention, rule, roi, epoch, seed -> rho (for best_layer/fixed_layer one layer each)."""
    s = scores[scores.convention.isin(CONVENTIONS)]
    keys = ["convention", "rule", "roi", "epoch", "seed"]
    return by_hierarchy(s.groupby(keys, as_index=False)["rho"].mean(), keys)


def condition_suffix(rules: pd.Series) -> pd.Series:
    """The condition after ``rule|`` (e.g. a resolution), "" for a plain rule; an empty series
    stays a series (``str.partition`` would give a frame without columns)."""
    return rules.map(lambda rule: rule.partition("|")[2]).astype(str)


def deltas(scores: pd.DataFrame) -> pd.DataFrame:
    """Per-seed change from epoch 0 and from the untrained network (same seed), over seeds.

    Columns: convention, rule, roi, epoch, delta_epoch0, delta_epoch0_sd, pct_epoch0,
    delta_untrained, delta_untrained_sd, n_seeds. pct_epoch0 = 100 * mean(delta) / mean(rho at 0).
    """
    s = by_seed(scores)
    base = s[s.epoch == 0][["convention", "rule", "roi", "seed", "rho"]].rename(
        columns={"rho": "rho0"})
    unt = s[(s.rule.str.split("|").str[0] == UNTRAINED) & (s.epoch == 0)].copy()
    unt["suffix"] = condition_suffix(unt.rule)
    unt = unt[["convention", "roi", "seed", "suffix", "rho"]].rename(columns={"rho": "rho_u"})
    s = s.merge(base, on=["convention", "rule", "roi", "seed"], how="left")
    s["suffix"] = condition_suffix(s.rule)
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
    return by_hierarchy(out, ["convention", "rule", "roi", "epoch"])


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


def frozen_checkpoints(table: pd.DataFrame) -> set[tuple[str, int, int]]:
    """(rule, seed, epoch) of checkpoints taken after training stopped: no layer learnt from an
    image since the checkpoint before (``trained_images`` unchanged on every layer), as for
    greedy layer-wise STDP once its image budget is spent. The same network scored again is no
    trend, so the trend test leaves these out."""
    if "trained_images" not in table.columns or table["trained_images"].isna().all():
        return set()
    per = table.groupby(["rule", "seed", "epoch", "layer"])["trained_images"].max().unstack("layer")
    frozen: set[tuple[str, int, int]] = set()
    for (rule, seed), g in per.groupby(level=[0, 1], sort=False):
        g = g.sort_index()
        counts, epochs = g.fillna(-1).to_numpy(), g.index.get_level_values("epoch")
        frozen |= {(rule, int(seed), int(epochs[k])) for k in range(1, len(epochs))
                   if (counts[k] == counts[k - 1]).all()}
    return frozen


def run_tests(scores: pd.DataFrame, reference: str = "bp",
              frozen: set[tuple[str, int, int]] | None = None) -> pd.DataFrame:
    """The study's three families for each convention, with BH within family and over all;
    ``frozen`` checkpoints (``frozen_checkpoints``) are left out of the trend."""
    s = by_seed(scores)
    if frozen:
        keys = list(zip(s.rule, s.seed.astype(int), s.epoch.astype(int)))
        trend_rows = ~pd.Series([k in frozen for k in keys], index=s.index)
    else:
        trend_rows = pd.Series(True, index=s.index)
    rows: list[dict] = []
    for conv, sc in s.groupby("convention", sort=False):
        rules = rule_order(sc.rule.unique(), reference)
        for roi in roi_order(sc.roi.unique()):
            g = sc[sc.roi == roi]
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
                gr = g[(g.rule == rule) & (g.epoch > 0) & trend_rows.loc[g.index]]
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
    return by_hierarchy(out, ["roi"])

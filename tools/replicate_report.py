"""RESULTS.md of the 92-image replication: the headline table (epoch 0 -> 1 per rule, resolution
and read-out, with bootstrap CI and exact sign-flip test), the references, the trajectory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

# summary part -> (condition suffix in its rule labels -> part of the run)
SUFFIX_PART = {"headline": {"res224": "headline", "res32": "headline_res32", "": "headline"},
               "readout": {"none": "readout", "grid4": "readout_grid"}}
PART_NAME = {"headline": "GAP, 224 px", "headline_res32": "GAP, 32 px",
             "readout": "spatial (no pooling), 224 px", "readout_grid": "4 x 4 grid, 224 px"}


def _f(v: float, digits: int = 3) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def _p(v: float) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.3g}"


def epoch_tests(out: Path) -> pd.DataFrame:
    """The epoch 0 vs 1 sign-flip tests of the headline and readout summaries, keyed by part."""
    frames = []
    for name, parts in SUFFIX_PART.items():
        path = out / name / "tests.csv"
        if not path.is_file():
            continue
        t = pd.read_csv(path)
        t = t[(t.family == "epoch0_vs_epoch1") & (t.convention == "best_layer")].copy()
        cond = t.rule_a.str.partition("|")[2]
        t["rule"] = t.rule_a.str.partition("|")[0]
        t["part"] = cond.map(parts)
        frames.append(t.dropna(subset=["part"]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["part", "rule", "roi", "p_two_sided", "p_fdr_family", "cohens_d"])


def headline_table(out: Path, boot: pd.DataFrame) -> str:
    tests = epoch_tests(out).set_index(["part", "rule", "roi"])
    lines = ["| read-out | rule | ROI | ρ epoch 0 | ρ epoch 1 | change | 95 % CI of ρ0 − ρ1 "
             "| sign-flip p | p (BH) | Cohen's d | seeds |", "|" + "---|" * 11]
    for r in boot.itertuples():
        key = (r.part, r.rule, r.roi)
        t = tests.loc[key] if key in tests.index else None
        pct = 100 * (r.rho_e1 - r.rho_e0) / abs(r.rho_e0) if r.rho_e0 else np.nan
        lines.append(
            f"| {PART_NAME.get(r.part, r.part)} | {r.rule} | {r.roi} | {_f(r.rho_e0)} "
            f"({r.layer_e0}) | {_f(r.rho_e1)} ({r.layer_e1}) | {_f(-r.drop)} ({_f(pct, 0)} %) "
            f"| [{_f(r.ci_low)}, {_f(r.ci_high)}] "
            f"| {_p(t.p_two_sided if t is not None else np.nan)} "
            f"| {_p(t.p_fdr_family if t is not None else np.nan)} "
            f"| {_f(t.cohens_d if t is not None else np.nan, 2)} | {r.n_seeds} |")
    return "\n".join(lines)


def readme_table(out: Path, scores: pd.DataFrame, boot: pd.DataFrame) -> str:
    """The README's table: per rule and ROI, best-layer rho at epoch 0 (224 px) and its change
    over epoch 1 at 224 and 32 px (stimulus-bootstrap CI, sign-flip p over seeds) and over the
    trajectory's last checkpoint (mean +- SD over seeds, sign-flip p)."""
    from replicate_figure import RULE_ORDER, best_layer_seeds

    from snnrsa.summarize import paired_test

    tests = epoch_tests(out).set_index(["part", "rule", "roi"])
    b = boot.set_index(["part", "rule", "roi"])
    seeds = best_layer_seeds(scores)
    seeds = seeds[seeds.panel == "headline"]

    def epoch1(part: str, rule: str, roi: str) -> str:
        if (part, rule, roi) not in b.index:
            return "–"
        r = b.loc[(part, rule, roi)]
        p = tests.loc[(part, rule, roi)].p_two_sided if (part, rule, roi) in tests.index else np.nan
        return f"{_f(-r['drop'])} [{_f(-r.ci_high)}, {_f(-r.ci_low)}], p = {_p(p)}"

    def last(rule: str, roi: str) -> str:
        g = seeds[(seeds.rule == rule) & (seeds.roi == roi)].pivot_table(
            index="seed", columns="epoch", values="rho")
        end = max(g.columns)
        if end <= 1:
            return "–"
        g = g[[0, end]].dropna()
        t = paired_test(g[end].to_numpy(), g[0].to_numpy())
        sd = (g[end] - g[0]).std(ddof=1) if len(g) > 1 else np.nan
        return f"{_f(t['diff'])} ± {_f(sd)} (epoch {end}, {len(g)} seeds), p = {_p(t['p_two_sided'])}"

    lines = ["| rule | ROI | ρ epoch 0 | Δρ 0→1, 224 px [95 % CI], p | Δρ 0→1, 32 px [95 % CI], p "
             "| Δρ 0→last, 224 px (± SD), p | seeds |", "|" + "---|" * 7]
    head = boot[boot.part == "headline"]
    order = {rule: i for i, rule in enumerate(RULE_ORDER)}
    head = head.assign(k=head.rule.map(order)).sort_values(["k", "roi"], kind="stable")
    for r in head.itertuples():
        lines.append(f"| {r.rule} | {r.roi} | {_f(r.rho_e0)} | {epoch1('headline', r.rule, r.roi)} "
                     f"| {epoch1('headline_res32', r.rule, r.roi)} | {last(r.rule, r.roi)} "
                     f"| {r.n_seeds} |")
    base = seeds[(seeds.rule == "untrained") & (seeds.epoch == 0)].groupby("roi").rho
    lines += [f"| untrained | {roi} | {_f(v.mean())} | – | – | – | {len(v)} |"
              for roi, v in base]
    return "\n".join(lines)


def trajectory_table(out: Path) -> str:
    path = out / "trajectory" / "deltas.csv"
    if not path.is_file():
        return "Not run yet (`--stage trajectory`)."
    d = pd.read_csv(path)
    d = d[(d.convention == "best_layer") & d.delta_epoch0.notna()]
    last = d[d.epoch == d.groupby("rule").epoch.transform("max")]
    lines = ["| rule | ROI | last epoch | Δρ vs epoch 0 (mean ± SD over seeds) | seeds |",
             "|---|---|---|---|---|"]
    lines += [f"| {r.rule} | {r.roi} | {r.epoch} | {_f(r.delta_epoch0)} ± "
              f"{_f(r.delta_epoch0_sd)} | {r.n_seeds} |" for r in last.itertuples()]
    return "\n".join(lines)


def encoding_table(out: Path, acc: pd.DataFrame) -> str:
    """The encoding swap: per input arm and ROI, rho at the best and at the fixed layer at epochs
    0, 1 and the last checkpoint (seed mean), and held-out accuracy there (mean +- SD over the seeds
    whose train.csv is here or archived; runs archived before accuracy.csv existed have none)."""
    from replicate_analysis import ENCODINGS

    path = out / "encodings" / "trajectories.csv"
    if not path.is_file():
        return "Not run yet (`--stage trajectory`)."
    d = pd.read_csv(path)
    d = d[d.convention.isin(["best_layer", "fixed_layer"])]
    lines = ["| input (arm) | ROI | read-out layer | ρ epoch 0 | ρ epoch 1 | ρ last (epoch) "
             "| held-out accuracy, last | seeds |", "|" + "---|" * 8]
    for rule, arm in ENCODINGS.items():
        a = d[d.rule == arm]
        if a.empty:
            continue
        end = int(a.epoch.max())
        fin = acc[(acc.part == "trajectory") & (acc.rule == rule) & (acc.epoch == end)].test_acc
        for (roi, conv), g in a.groupby(["roi", "convention"], sort=False):
            rho = g.set_index("epoch")["mean"]
            layer = "best" if conv == "best_layer" else g.layer.iloc[0]
            accuracy = ("not archived" if fin.empty else f"{_f(fin.mean())} ± "
                        f"{_f(fin.std(ddof=1))} ({len(fin)} seed{'s' * (len(fin) != 1)})")
            lines.append(f"| {arm} | {roi} | {layer} | {_f(rho.get(0))} | {_f(rho.get(1))} "
                         f"| {_f(rho.get(end))} ({end}) | {accuracy} | {g.n_seeds.max()} |")
    return "\n".join(lines)


def wall_table(wall: pd.DataFrame) -> str:
    """Seconds per job (whole process) by part and rule: mean, min and max over seeds."""
    if wall.empty:
        return "–"
    threads = wall.device.fillna("").str.extract(r"(\d+) threads?", expand=False).fillna("?")
    g = wall.assign(threads=threads).groupby(["part", "rule"], sort=False)
    lines = ["| part | rule | seconds per seed (mean; min–max) | threads per job | seeds |",
             "|---|---|---|---|---|"]
    lines += [f"| {part} | {rule} | {v.job_seconds.mean():.0f}; {v.job_seconds.min():.0f}–"
              f"{v.job_seconds.max():.0f} | {', '.join(sorted(set(v.threads)))} | {len(v)} |"
              for (part, rule), v in g]
    return "\n".join(lines)


def partial_table(partial: pd.DataFrame) -> str:
    t = partial[(partial.part == "headline") & (partial.layer == "conv1")]
    if t.empty:
        return ""
    m = t.groupby(["rule", "roi", "epoch"], sort=False)[["rho", "partial_rho"]].mean()
    lines = ["| rule | ROI | epoch | conv1 ρ | conv1 partial ρ (pixel RDM removed) |",
             "|---|---|---|---|---|"]
    lines += [f"| {rule} | {roi} | {epoch} | {_f(v.rho)} | {_f(v.partial_rho)} |"
              for (rule, roi, epoch), v in m.iterrows()]
    return "\n".join(lines)


def results_markdown(out: Path, scores: pd.DataFrame, tables: dict[str, pd.DataFrame],
                     n_boot: int) -> str:
    runs = scores.groupby("part").run.nunique()
    ceil = out / "noise_ceiling.csv"
    ceil_text = "–"
    if ceil.is_file():
        c = pd.read_csv(ceil)
        ceil_text = "\n".join(["| ROI | lower | upper | subjects |", "|---|---|---|---|"] + [
            f"| {r.roi} | {_f(r.lower)} | {_f(r.upper)} | {r.n_subjects} |"
            for r in c.itertuples()])
    pixel = tables["pixel_reference"]
    return "\n".join([
        "# The 92-image replication (Cichy et al. 2014: EVC and IT RDMs of 15 subjects)", "",
        "Regenerate: `python tools/replicate_cichy92.py` (stages headline, readout, trajectory, "
        "summarize; `--dry-run` lists the jobs). Protocol: `experiment=replicate_cichy92` "
        "(corrected: BatchNorm in eval mode), CIFAR-10 JPEG subset (`data=imagefolder`), "
        "per-subject Spearman ρ of 1 − r RDMs over all 4,186 image pairs, best layer per rule, "
        "ROI and epoch as in the study.", "",
        "Runs: " + ", ".join(f"{part} {n}" for part, n in runs.items()) + "; seeds "
        + ", ".join(map(str, sorted(scores.seed.unique()))) + ".", "",
        "![best-layer ρ against epoch](results.png)", "",
        "## Summary (best layer, GAP read-out; Δρ = later − epoch 0; CI: stimulus bootstrap; "
        "p: exact sign-flip over seeds, two-sided)", "",
        readme_table(out, scores, tables["bootstrap_epoch0_minus_epoch1"]), "",
        "## Epoch 0 → 1 (best layer; CI: stimulus bootstrap, "
        f"{n_boot} resamples shared by all rows; p: exact sign-flip over seeds)", "",
        headline_table(out, tables["bootstrap_epoch0_minus_epoch1"]), "",
        "## Noise ceilings (leave one subject out)", "", ceil_text, "",
        "## Pixel RDM reference (1 − r on 64 × 64 RGB, mean over subjects)", "",
        " · ".join(f"{r.roi} ρ = {r.rho:.3f}" for r in pixel.itertuples()), "",
        "## Partial RSA: conv1 controlling for the pixel RDM (GAP, 224 px, seed mean)", "",
        partial_table(tables["partial_rsa"]), "",
        "## Wall time per job (2 CPU cores; 2 threads per job: one job at a time, 1: two jobs "
        "side by side; start-up, data, training and scoring; device and versions in each run's "
        "meta.json)", "",
        wall_table(tables["wall_time"]), "",
        "## Trajectory: change from epoch 0 at the last checkpoint (best layer)", "",
        trajectory_table(out), "",
        "## The encoding swap on real fMRI (BP on the rate backbone and on the LIF backbone with "
        "analog, Poisson and latency input; trajectory jobs; figures in `encodings/`)", "",
        encoding_table(out, tables["accuracy"]), "",
        "Per-part tables, tests (exact sign-flip p, Cohen's d, BH within and across families) "
        "and figures: `headline/`, `readout/`, `trajectory/`, `encodings/` (`report.md` in each). Every "
        "score: `scores.csv.gz`.", ""])

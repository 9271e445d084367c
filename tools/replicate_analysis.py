"""The summarize stage of tools/replicate_cichy92.py: the run folders -> docs/results/cichy92/.

Written there: ``scores.csv.gz`` (every score of every run, long and tidy, labelled by part and
rule), per part (headline, readout, trajectory) ``snnrsa-summarize``'s tables, tests and PNG
figures, ``noise_ceiling.csv`` (LOSO), ``bootstrap_epoch0_minus_epoch1.csv`` (stimulus-bootstrap
95 % CIs), ``partial_rsa.csv`` (controlling for the pixel RDM), ``pixel_reference.csv`` and
``results.png`` (the README figure) and ``RESULTS.md`` (the README table, the headline table).

The results folder is also the ledger of finished jobs (``jobs.json``): its tables keep the rows
of jobs whose run folders are not on this machine, so a fresh machine (a new session, another
cluster node) adds its jobs to what is committed instead of starting over. A job's rows are
recomputed whenever its run folder is present.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from snnrsa.data.images import load_image
from snnrsa.rsa import partial_compare, percentile_ci
from snnrsa.rsa.bootstrap import bootstrap_indices, bootstrap_score
from snnrsa.rsa.mapping import best_layer
from snnrsa.rsa.references import pixel_rdm
from snnrsa.summarize import summarize
from snnrsa.summarize.loading import roi_order

PARTS = ("headline", "headline_res32", "readout", "readout_grid", "trajectory")
SUMMARIES = {"headline": ("headline", "headline_res32"),
             "readout": ("headline", "readout", "readout_grid"),
             "trajectory": ("trajectory", "headline"),
             "encodings": ("trajectory",)}
# the encoding swap (issue 15's question on real fMRI): BP's trajectory jobs per input, labelled
# by the experiment=encoding_swap arm they are
ENCODINGS = {"bp": "rate_analog", "bp_lif": "lif_analog", "bp_lif_poisson": "lif_poisson",
             "bp_lif_latency": "lif_latency"}
ENCODING_ARMS = ("bp_lif_poisson", "bp_lif_latency")  # trajectory only: not replication rules
DROP = ("neuron", "encoding", "readout")  # the label already says them
PIXEL_SIZE = 64  # the pixel RDM of data-formats.md: 1 - r on 64 x 64 RGB
LEDGER = "jobs.json"
REPO = Path(__file__).resolve().parents[1]


def ledger(out: Path) -> dict[str, dict]:
    """Finished jobs recorded in the results folder: job name -> its overrides and seconds."""
    path = out / LEDGER
    return json.loads(path.read_text()) if path.is_file() else {}


def archived(out: Path, name: str) -> pd.DataFrame | None:
    """A committed table of the results folder (None before the first summary)."""
    path = out / name
    return pd.read_csv(path) if path.is_file() else None


def load_brains(brain_root: Path) -> dict[str, np.ndarray]:
    """The 92-image set's subject RDMs per ROI (subjects x 92 x 92), read as the runs read them."""
    from hydra import compose, initialize_config_dir

    from snnrsa.brain import load_brain
    from snnrsa.config import resolve

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = resolve(compose("config", overrides=["experiment=replicate_cichy92",
                                                   f"brain.root={brain_root}"]))
    return dict(load_brain(cfg.brain).rdms)


def run_dirs(runs: Path, part: str) -> list[Path]:
    """A part's finished jobs (their ``replicate_done.json``): a summary taken while jobs still
    train leaves those out rather than mixing in their first checkpoints."""
    return sorted(p.parent for p in (runs / part).glob("*/replicate_done.json")
                  if (p.parent / "rsa.csv").exists())


def label(run: Path) -> str:
    """The job's rule label (bp, bp_lif, stdp_published, ...) from its folder name."""
    return run.name.rsplit("_seed", 1)[0]


def seed_of(run: Path) -> int:
    return int(run.name.rsplit("_seed", 1)[1])


def with_archived(here: pd.DataFrame, archive: pd.DataFrame | None, key: list[str]) -> pd.DataFrame:
    """``here`` and the archived rows of the jobs it lacks (their folders are not on this
    machine); a job's rows here replace its archived ones."""
    if archive is None:
        return here
    if here.empty:
        return archive.copy()
    old = archive.set_index(key).index.isin(here.set_index(key).index)
    return pd.concat([here, archive[~old]], ignore_index=True)


def collect(runs: Path, archive: pd.DataFrame | None) -> pd.DataFrame:
    """Every rsa.csv of every part (rule = the job's label; rule_name keeps snnrsa's), and the
    archived rows of jobs whose folders are not here; ordered by part, then job."""
    frames = [pd.read_csv(run / "rsa.csv").rename(columns={"rule": "rule_name"}).assign(
        part=part, rule=label(run), run=f"{part}/{run.name}")
        for part in PARTS for run in run_dirs(runs, part)]
    t = with_archived(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(),
                      archive, ["run"])
    if t.empty:
        raise FileNotFoundError(f"no rsa.csv under {runs}/{{{','.join(PARTS)}}} and no archived "
                                "scores: run the stages")
    order = t.part.map(PARTS.index)
    return t.assign(_o=order).sort_values(["_o", "run"], kind="stable").drop(columns="_o") \
        .reset_index(drop=True)


def part_summary(scores: pd.DataFrame, runs: Path, name: str, out: Path,
                 brains: dict[str, np.ndarray]) -> list[str]:
    """snnrsa-summarize on one part's relabelled table (noise ceiling from the subject RDMs);
    PNG figures only."""
    parts = SUMMARIES[name]
    t = scores[scores.part.isin(parts)]
    if name == "trajectory":  # the untrained network joins the trajectory at epoch 0
        t = t[((t.part == "trajectory") | (t.rule == "untrained")) & ~t.rule.isin(ENCODING_ARMS)]
    if name == "encodings":
        t = t[t.rule.isin(ENCODINGS)].assign(rule=lambda d: d.rule.map(ENCODINGS))
    if t.empty or not (t.part == parts[0]).any():
        return []
    work = runs / "_tables" / name
    work.mkdir(parents=True, exist_ok=True)
    t.drop(columns=[c for c in (*DROP, "part", "run", "rule_name") if c in t]).to_csv(
        work / "rsa.csv", index=False)
    with h5py.File(work / "results.h5", "w") as f:  # what snnrsa-summarize's ceiling reads
        for roi, rdms in brains.items():
            f.create_dataset(f"brain/{roi}", data=rdms)
    dest = out / name
    summarize([work], dest)
    for pdf in dest.glob("*.pdf"):
        pdf.unlink()
    return [str(p.relative_to(out)) for p in sorted(dest.iterdir())]


def model_rdm(run: Path, epoch: int, layer: str) -> np.ndarray:
    with h5py.File(run / "results.h5", "r") as f:
        return f[f"model/epoch_{epoch}/{layer}"][()]


def bootstrap_drops(scores: pd.DataFrame, runs: Path, n_boot: int, brains: dict[str, np.ndarray],
                    archive: pd.DataFrame | None) -> pd.DataFrame:
    """Per rule, part and ROI: epoch 0 - epoch 1 of the seed-mean rho at the study's best layer
    of each epoch, with a 95 % percentile CI over stimulus resamples shared by all conditions.
    Needs every seed's model RDMs: a condition with a run folder missing keeps its archived rows."""
    rows, kept = [], []
    t = scores[scores.part.isin(("headline", "headline_res32", "readout", "readout_grid"))]
    idx = bootstrap_indices(next(iter(brains.values())).shape[1], n_boot, 0)
    for (part, rule), g in t.groupby(["part", "rule"], sort=False):
        if not {0, 1} <= set(g.epoch):
            continue
        best = best_layer(g).set_index(["roi", "epoch"])["layer"]
        seeds = sorted(set(g[g.epoch == 0].seed) & set(g[g.epoch == 1].seed))
        where = {s: runs / g[g.seed == s].run.iloc[0] for s in seeds}
        if not all((w / "results.h5").is_file() for w in where.values()):
            if archive is not None:
                kept.append(archive[(archive.part == part) & (archive.rule == rule)])
            continue
        for roi in roi_order(g.roi.unique()):
            layers = best[roi, 0], best[roi, 1]
            rdms = np.stack([model_rdm(where[s], e, layers[e]) for e in (0, 1) for s in seeds])
            boot = bootstrap_score(rdms, brains[roi], indices=idx)
            diff = boot[:, :len(seeds)].mean(1) - boot[:, len(seeds):].mean(1)
            point = g[g.roi == roi].groupby(["epoch", "layer"]).rho.mean()
            lo, hi = percentile_ci(diff[np.isfinite(diff)])
            rows.append({"part": part, "rule": rule, "roi": roi, "layer_e0": layers[0],
                         "layer_e1": layers[1], "rho_e0": point[0, layers[0]],
                         "rho_e1": point[1, layers[1]],
                         "drop": point[0, layers[0]] - point[1, layers[1]],
                         "ci_low": lo, "ci_high": hi, "n_seeds": len(seeds),
                         "n_boot": int(np.isfinite(diff).sum())})
    return pd.concat([pd.DataFrame(rows), *kept], ignore_index=True)


def wall_times(runs: Path, archive: pd.DataFrame | None) -> pd.DataFrame:
    """Per job: the whole process (``replicate_done.json``: start-up, data, training, scoring)
    and snnrsa's own ``meta.json`` wall and CPU seconds; archived rows for jobs not here."""
    rows = []
    for part in PARTS:
        for run in run_dirs(runs, part):
            done, meta = run / "replicate_done.json", run / "meta.json"  # run_dirs: finished
            m = json.loads(meta.read_text()) if meta.is_file() else {}
            rows.append({"part": part, "rule": label(run), "seed": seed_of(run),
                         "job_seconds": json.loads(done.read_text())["seconds"],
                         "run_wall_seconds": m.get("wall_seconds"),
                         "run_process_seconds": m.get("process_seconds"), "device": m.get("device")})
    key = ["part", "rule", "seed"]
    return with_archived(pd.DataFrame(rows), archive, key).sort_values(key, kind="stable",
                                                                       ignore_index=True)


def accuracy(runs: Path, archive: pd.DataFrame | None) -> pd.DataFrame:
    """Held-out accuracy (train.csv) per training job and checkpoint; archived rows for jobs not
    here."""
    key = ["part", "rule", "seed"]
    frames = [pd.read_csv(run / "train.csv", usecols=["epoch", "test_acc"]).dropna().assign(
        part=part, rule=label(run), seed=seed_of(run))
        for part in ("headline", "trajectory") for run in run_dirs(runs, part)]
    t = with_archived(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(),
                      archive, key)
    if t.empty:
        return pd.DataFrame(columns=[*key, "epoch", "test_acc"])
    return t[[*key, "epoch", "test_acc"]].sort_values([*key, "epoch"], kind="stable",
                                                      ignore_index=True)


def pixel_images(brain_root: Path) -> np.ndarray:
    files = sorted((brain_root / "images").glob("image_*.jpg"))
    return np.stack([load_image(p, PIXEL_SIZE) for p in files]).astype(np.float64)


def pixel_reference(pixel: np.ndarray, brains: dict[str, np.ndarray]) -> pd.DataFrame:
    """The pixel RDM against each subject (Spearman, upper triangle), mean over subjects."""
    iu = np.triu_indices(len(pixel), 1)
    return pd.DataFrame([{"reference": "pixel", "roi": roi,
                          "rho": float(np.mean([spearmanr(pixel[iu], s[iu])[0] for s in rdms]))}
                         for roi, rdms in brains.items()])


def partial_rsa(scores: pd.DataFrame, runs: Path, pixel: np.ndarray,
                brains: dict[str, np.ndarray], archive: pd.DataFrame | None) -> pd.DataFrame:
    """Per headline run, epoch, layer and ROI: rho and the partial rho controlling for the pixel
    RDM (both Spearman, per subject, then the subject mean); archived rows for runs not here."""
    rows, kept = [], []
    t = scores[scores.part.isin(("headline", "headline_res32"))]
    for run_name, g in t.groupby("run", sort=False):
        run = runs / run_name
        if not (run / "results.h5").is_file():
            if archive is not None:
                kept.append(archive[(archive.part == g.part.iloc[0]) & (archive.rule == g.rule.iloc[0])
                                    & (archive.seed == g.seed.iloc[0])])
            continue
        for epoch in sorted(g.epoch.unique()):
            layers = list(dict.fromkeys(g.layer))
            models = np.stack([model_rdm(run, epoch, layer) for layer in layers])
            for roi, subj in brains.items():
                part = partial_compare(models, subj, pixel).mean(axis=1)
                rho = g[(g.epoch == epoch) & (g.roi == roi)].groupby("layer").rho.mean()
                rows += [{"part": g.part.iloc[0], "rule": g.rule.iloc[0], "seed": g.seed.iloc[0],
                          "epoch": epoch, "layer": layer, "roi": roi, "rho": rho[layer],
                          "partial_rho": float(p)} for layer, p in zip(layers, part)]
    return pd.concat([pd.DataFrame(rows), *kept], ignore_index=True)


def summarize_all(runs: Path, out: Path, brain_root: Path, n_boot: int = 1000) -> list[str]:
    """Everything of docs/results/cichy92/ from the run folders and the jobs already recorded
    there; returns the files written."""
    from replicate_figure import results_figure
    from replicate_report import results_markdown

    out.mkdir(parents=True, exist_ok=True)
    jobs = ledger(out)
    jobs.update({f"{part}/{run.name}": json.loads((run / "replicate_done.json").read_text())
                 for part in PARTS for run in run_dirs(runs, part)})
    scores = collect(runs, archived(out, "scores.csv.gz"))
    scores.assign(rho=scores.rho.round(6)).to_csv(out / "scores.csv.gz", index=False,
                                                  compression="gzip")
    written = ["scores.csv.gz"]
    brains = load_brains(brain_root)
    for name in SUMMARIES:
        written += part_summary(scores, runs, name, out, brains)
    if (out / "headline" / "noise_ceiling.csv").is_file():
        shutil.copyfile(out / "headline" / "noise_ceiling.csv", out / "noise_ceiling.csv")
        written.append("noise_ceiling.csv")
    pixel = pixel_rdm(pixel_images(brain_root))
    tables = {
        "bootstrap_epoch0_minus_epoch1": bootstrap_drops(
            scores, runs, n_boot, brains, archived(out, "bootstrap_epoch0_minus_epoch1.csv")),
        "pixel_reference": pixel_reference(pixel, brains),
        "partial_rsa": partial_rsa(scores, runs, pixel, brains, archived(out, "partial_rsa.csv")),
        "wall_time": wall_times(runs, archived(out, "wall_time.csv")),
        "accuracy": accuracy(runs, archived(out, "accuracy.csv")),
    }
    for name, table in tables.items():
        table.to_csv(out / f"{name}.csv", index=False, float_format="%.6g")
        written.append(f"{name}.csv")
    ceilings = pd.read_csv(out / "noise_ceiling.csv") if (out / "noise_ceiling.csv").is_file() else None
    results_figure(scores, ceilings, out / "results.png")
    written.append("results.png")
    (out / "RESULTS.md").write_text(results_markdown(out, scores, tables, n_boot))
    tmp = out / f"{LEDGER}.tmp"
    tmp.write_text(json.dumps(dict(sorted(jobs.items())), indent=1))
    tmp.rename(out / LEDGER)
    written += ["RESULTS.md", LEDGER]
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{out}: {size / 1e6:.2f} MB" + ("  (over the 5 MB budget)" if size > 5e6 else ""))
    return written

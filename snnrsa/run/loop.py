"""The main job: setup -> resume -> for each epoch, train (sub-epoch dynamics as a callback) and
evaluate the checkpoint epochs; every file of the run directory is written here."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from snnrsa.data.training import TrainingSet, batches, load_training_data
from snnrsa.model.network import Network
from snnrsa.plots import plot_trajectory
from snnrsa.rules import Rule, build_network, make_rule
from snnrsa.run.evaluation import (
    EvalSet,
    accuracy,
    calibrate_batch_norm,
    checkpoint_scores,
    firing_stats,
    held_out_subset,
    load_eval_set,
    noise_ceilings,
    probe_rows,
    set_mode,
)
from snnrsa.run.state import RunState, seed_everything
from snnrsa.runtime import keep_freed_memory
from snnrsa.schema import SPIKING_NEURONS, Config
from snnrsa.store import run_metadata, save_checkpoint, write_csv, write_metadata, write_results_h5

log = logging.getLogger("snnrsa.run")


@dataclass
class Job:
    """What stays fixed during a run: config, data, evaluation set, network, rule, identity."""

    cfg: Config
    out_dir: Path
    config_yaml: str
    device: torch.device
    meta: dict[str, Any]
    data: TrainingSet
    evalset: EvalSet
    net: Network
    rule: Rule
    checkpoints: list[int]
    sources: dict[int, Path]  # evaluate_from: epoch -> checkpoint of the run being re-scored
    ident: dict[str, Any]
    held_out: torch.Tensor | None  # test images scored for accuracy (None: all)
    ceilings: pd.DataFrame  # LOSO noise ceiling per ROI (noise_ceiling.csv)
    started: float  # perf_counter() when this process began the job


def run(cfg: Config, out_dir: Path, config_yaml: str, job_num: int = 0) -> pd.DataFrame:
    """Train and track; returns the tidy RSA table also written to ``out_dir/rsa.csv``.
    A run directory holding checkpoints of the same config is resumed after its last one (or
    skipped when complete), so a killed job ends with the same numbers as an uninterrupted one.
    With ``evaluate_from`` the checkpoints of that run are scored instead of training (e.g. the
    same weights at another evaluation resolution)."""
    job = setup(cfg, out_dir, config_yaml, job_num)
    state = resume(job)
    last = max(job.checkpoints)
    if state.start_epoch > last:
        log.info("%s is complete (last checkpoint epoch %d): nothing to do", out_dir,
                 state.start_epoch - 1)
        write_wall_time(job, state)
        return pd.DataFrame(state.rsa_rows)
    dynamics = DynamicsCallback(job, state) if cfg.dynamics.interval else None
    epochs = tqdm(range(state.start_epoch, last + 1), desc=f"{cfg.rule.name}/{cfg.neuron.name}",
                  unit="epoch", disable=not cfg.progress, initial=state.start_epoch,
                  total=last + 1)
    for epoch in epochs:
        if job.sources and epoch not in job.sources:
            continue
        t0 = time.perf_counter()
        train_loss = train_acc = float("nan")
        if job.sources:  # evaluation only: the weights come from another run's checkpoint
            ckpt = torch.load(job.sources[epoch], map_location=job.device, weights_only=False)
            job.net.load_state_dict(ckpt["model"])
            job.rule.load_state_dict(ckpt["rule"])
            state.images_seen = ckpt.get("images_seen", state.images_seen)  # trained_images
        elif epoch > 0:
            train_loss, train_acc = train_epoch(job, state, epoch, dynamics)
        test_acc = record_epoch(job, state, epoch, train_loss, train_acc, t0)
        if epoch in job.checkpoints:
            t1 = time.perf_counter()
            evaluate_checkpoint(job, state, epoch)
            state.train_rows[-1]["eval_seconds"] = time.perf_counter() - t1
            write_csv(pd.DataFrame(state.train_rows), job.out_dir / "train.csv")
            write_wall_time(job, state)
            if not job.sources:  # last: a checkpoint on disk means everything up to it is written
                save_checkpoint(job.out_dir / "checkpoints" / f"epoch_{epoch}.pt",
                                state.to_checkpoint(epoch, job.net.state_dict(),
                                                    job.rule.state_dict(), job.config_yaml))
        epochs.set_postfix(test_acc=f"{test_acc:.3f}")
    return pd.DataFrame(state.rsa_rows)


def setup(cfg: Config, out_dir: Path, config_yaml: str, job_num: int) -> Job:
    """Load the data and the evaluation set, then build the network and the rule from the seed."""
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.keep_freed_memory:
        keep_freed_memory()
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device, job_num)
    meta = run_metadata(config_yaml, device)
    write_metadata(out_dir, meta)
    evalset = load_eval_set(cfg)  # first: bad brain input fails before the training set loads
    data = load_training_data(cfg.data, run_seed=cfg.seed)
    brain = evalset.brain
    log.info("training set %d images (%d classes); %d evaluation conditions at %d px; "
             "ROIs %s; subjects %s; device %s", len(data.train_labels), len(data.classes),
             len(brain.stimuli), cfg.brain.resolution, brain.rois, brain.subjects, meta["device"])
    seed_everything(cfg.seed)
    net = build_network(cfg, len(data.classes)).to(device)
    rule = make_rule(cfg.rule, net, n_epochs=max(cfg.checkpoints))
    sources = source_checkpoints(cfg.evaluate_from) if cfg.evaluate_from else {}
    # the backbone's own LIF neurons behind BatchNorm (bp, fa, untrained...; not STDP's neurons)
    lif = all(getattr(b.neuron, "impl", None) in ("fast", "library") for b in net.backbone.blocks)
    if cfg.neuron.name in SPIKING_NEURONS and lif and cfg.neuron.bn_calibration and not sources:
        calibrate_batch_norm(net, data, cfg.neuron.bn_calibration, cfg.data.batch_size, device)
    checkpoints = sorted(sources) if sources else list(cfg.checkpoints) if rule.trains else [0]
    ident = {"rule": cfg.rule.name, "neuron": cfg.neuron.name, "encoding": cfg.encoding.name,
             "readout": cfg.readout.name, "seed": cfg.seed}
    held_out = held_out_subset(len(data.test_labels), cfg.test_images, cfg.data.data_seed + 2)
    ceilings = noise_ceilings(evalset)
    write_csv(ceilings, out_dir / "noise_ceiling.csv")
    return Job(cfg, out_dir, config_yaml, device, meta, data, evalset, net, rule, checkpoints,
               sources, ident, held_out=held_out, ceilings=ceilings, started=started)


def resume(job: Job) -> RunState:
    """A fresh state, or the state after the run directory's last checkpoint."""
    gen = torch.Generator().manual_seed(job.cfg.seed)
    last = find_checkpoint(job.out_dir) if job.cfg.resume and not job.sources else None
    if last is None:
        return RunState(gen=gen)
    ckpt = torch.load(last, map_location=job.device, weights_only=False)
    if ckpt["config"] != job.config_yaml:
        raise RuntimeError(f"{job.out_dir} holds a run with another config ({last}); "
                           "use a new output directory or resume=false")
    job.net.load_state_dict(ckpt["model"])
    job.rule.load_state_dict(ckpt["rule"])
    state = RunState.from_checkpoint(ckpt, gen, read_model_rdms(job.out_dir / "results.h5",
                                                                ckpt["epoch"]))
    if state.start_epoch <= max(job.checkpoints):
        log.info("resuming %s after checkpoint epoch %d", job.out_dir, ckpt["epoch"])
    return state


def train_epoch(job: Job, state: RunState, epoch: int,
                on_batch: DynamicsCallback | None) -> tuple[float, float]:
    """One pass over the training set; mean loss and accuracy of its batches."""
    set_mode(job.net, True)
    total, correct, seen = 0.0, 0, 0
    data = job.data
    for x, y in batches(data.train_images, data.train_labels, job.cfg.data.batch_size,
                        device=job.device, gen=state.gen, drop_last=job.cfg.data.drop_last,
                        do_augment=job.cfg.data.augment):
        loss, ok = job.rule.train_batch(x, y)
        total, correct, seen = total + loss, correct + ok, seen + len(y)
        if on_batch is not None:
            on_batch(epoch, seen, len(y))
    state.images_seen += seen
    job.rule.end_epoch()
    if not job.rule.classifies:  # no class read-out: no loss or accuracy to report
        return float("nan"), float("nan")
    return total / max(seen, 1), correct / max(seen, 1)


class DynamicsCallback:
    """Every ``dynamics.interval`` training images: score the layers (dynamics_rsa.csv) and keep
    the rule's snapshot arrays (``/dynamics`` in results.h5)."""

    def __init__(self, job: Job, state: RunState) -> None:
        self.job, self.state, self.interval = job, state, job.cfg.dynamics.interval

    def __call__(self, epoch: int, seen: int, batch: int) -> None:
        now = self.state.images_seen + seen
        if now // self.interval <= (now - batch) // self.interval:
            return
        job = self.job
        at = epoch - 1 + seen / len(job.data.train_labels)
        set_mode(job.net, False, job.cfg.bn_eval_mode)
        rows = checkpoint_scores(job.rule, job.cfg, job.evalset, job.device)[1]
        self.state.dynamics_rows += [{**job.ident, "epoch": at, "images": now, **row}
                                     for row in rows]
        self.state.snapshots.append({"images": now, "epoch": at, "arrays": job.rule.dynamics()})
        write_csv(pd.DataFrame(self.state.dynamics_rows), job.out_dir / "dynamics_rsa.csv")
        set_mode(job.net, True)


def record_epoch(job: Job, state: RunState, epoch: int, train_loss: float, train_acc: float,
                 t0: float) -> float:
    """Held-out accuracy at checkpoint epochs and every ``test_every`` epochs (NaN between);
    train.csv and rule_log.csv rewritten. ``seconds`` is the epoch's training and test time,
    ``eval_seconds`` (set by the caller at checkpoints) its RSA scoring. Returns the accuracy."""
    test_loss = test_acc = float("nan")
    every = job.cfg.test_every
    if epoch in job.checkpoints or (every > 0 and epoch % every == 0):
        set_mode(job.net, False)
        if job.rule.classifies:
            test_loss, test_acc = accuracy(job.rule, job.data, job.cfg.data.batch_size,
                                           job.device, job.held_out)
    state.train_rows.append({"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                             "test_loss": test_loss, "test_acc": test_acc,
                             "seconds": time.perf_counter() - t0, "eval_seconds": 0.0})
    write_csv(pd.DataFrame(state.train_rows), job.out_dir / "train.csv")
    if job.rule.log_rows():
        write_csv(pd.DataFrame([{**job.ident, **r} for r in job.rule.log_rows()]),
                  job.out_dir / "rule_log.csv")
    return test_acc


def pooling_label(cfg: Config) -> str:
    """The ``pooling`` column: gap, none, or grid<k> (k = rsa.pool_grid, so grids stay apart)."""
    pooling = cfg.rsa.layer_pooling
    return f"grid{cfg.rsa.pool_grid}" if pooling == "grid" else pooling


def evaluate_checkpoint(job: Job, state: RunState, epoch: int) -> None:
    """Score every layer against every ROI and subject (rsa.csv, results.h5, the trajectory
    figure) and, where asked, the linear probes (probe.csv)."""
    cfg, net = job.cfg, job.net
    set_mode(net, False, cfg.bn_eval_mode)
    state.model_rdms[epoch], rows = checkpoint_scores(job.rule, cfg, job.evalset, job.device)
    n_stimuli = len(job.evalset.brain.stimuli)
    spiking = cfg.neuron.name in SPIKING_NEURONS or getattr(job.rule, "spiking", False)
    firing = (firing_stats(net, job.evalset.images, cfg.rsa.layers, cfg.rsa.eval_batch_size,
                           job.device) if spiking else {})

    def trained(layer: str) -> int:  # training images this layer has learnt from
        n = job.rule.trained_images(layer)
        return state.images_seen if n is None else n

    state.rsa_rows += [{**job.ident, "epoch": epoch, **row, "trained_images": trained(row["layer"]),
                        "resolution": cfg.brain.resolution,
                        "selection": cfg.brain.selection, "pairs": cfg.rsa.pairs,
                        "pooling": pooling_label(cfg),
                        "n_stimuli": n_stimuli, **firing.get(row["layer"], {})} for row in rows]
    if cfg.readout.probe_layers:
        state.probe_rows += [{**job.ident, "epoch": epoch, **r}
                             for r in probe_rows(cfg, net, job.data, job.device)]
        write_csv(pd.DataFrame(state.probe_rows), job.out_dir / "probe.csv")
        set_mode(net, False)
    rsa = pd.DataFrame(state.rsa_rows)
    write_csv(rsa, job.out_dir / "rsa.csv")
    write_results_h5(job.out_dir / "results.h5", job.evalset.brain, state.model_rdms, job.meta,
                     state.snapshots)
    plot_trajectory(rsa, job.out_dir / "rsa_trajectory.png", job.ceilings)


def write_wall_time(job: Job, state: RunState) -> None:
    """meta.json gains the job's wall time: ``wall_seconds`` summed over its epochs (training,
    test and RSA scoring, across resumed processes) and ``process_seconds`` of this process."""
    done = pd.DataFrame(state.train_rows)
    wall = float(done.reindex(columns=["seconds", "eval_seconds"]).fillna(0).to_numpy().sum())
    job.meta.update(wall_seconds=round(wall, 3),
                    process_seconds=round(time.perf_counter() - job.started, 3))
    write_metadata(job.out_dir, job.meta)


def resolve_device(name: str, job_num: int = 0) -> torch.device:
    """``auto``: CUDA when present, jobs of a sweep spread over the visible GPUs by job number."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device(f"cuda:{job_num % torch.cuda.device_count()}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={name!r} but CUDA is not available; use device=auto or cpu")
    return torch.device(name)


def find_checkpoint(out_dir: Path) -> Path | None:
    """The latest checkpoint of a previous (possibly killed) run in ``out_dir``."""
    found = sorted((out_dir / "checkpoints").glob("epoch_*.pt"),
                   key=lambda p: int(p.stem.split("_")[1]))
    return found[-1] if found else None


def source_checkpoints(run_dir: str) -> dict[int, Path]:
    """Epoch -> checkpoint of a finished run, for evaluation-only jobs (``evaluate_from``)."""
    found = {int(p.stem.split("_")[1]): p
             for p in Path(run_dir).expanduser().glob("checkpoints/epoch_*.pt")}
    if not found:
        raise FileNotFoundError(f"evaluate_from={run_dir}: no checkpoints/epoch_<E>.pt there")
    return found


def read_model_rdms(path: Path, up_to: int) -> dict[int, dict[str, np.ndarray]]:
    with h5py.File(path, "r") as f:
        return {int(e.split("_")[1]): {layer: f[f"model/{e}/{layer}"][()] for layer in f[f"model/{e}"]}
                for e in f["model"] if int(e.split("_")[1]) <= up_to}

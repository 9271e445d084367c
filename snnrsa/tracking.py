"""The main job: train with a rule and, at every checkpoint epoch, score each read-out layer's RDM
against each subject's ROI RDM (Spearman over the upper triangle), writing the run directory."""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from snnrsa.brain import Brain, load_brain
from snnrsa.config import SPIKING_NEURONS, Config
from snnrsa.data.images import load_images
from snnrsa.data.training import TrainingSet, batches, load_training_data
from snnrsa.network import Network
from snnrsa.plots import plot_trajectory
from snnrsa.rsa import correlation_rdm, spearman
from snnrsa.rules import Rule, make_rule
from snnrsa.runtime import keep_freed_memory
from snnrsa.store import (
    run_metadata,
    save_checkpoint,
    write_csv,
    write_metadata,
    write_results_h5,
)

log = logging.getLogger(__name__)
BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str, job_num: int = 0) -> torch.device:
    """``auto``: CUDA when present, jobs of a sweep spread over the visible GPUs by job number."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device(f"cuda:{job_num % torch.cuda.device_count()}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={name!r} but CUDA is not available; use device=auto or cpu")
    return torch.device(name)


def set_mode(net: nn.Module, training: bool, bn_mode: str = "eval") -> None:
    """Switch to training or evaluation; at evaluation BatchNorm follows ``bn_mode`` ('train'
    reproduces the study's PC/STDP defect of batch statistics at feature extraction)."""
    net.train(training)
    if not training and bn_mode == "train":
        for m in net.modules():
            if isinstance(m, BN_TYPES):
                m.train(True)
    assert_bn_mode(net, "train" if training else bn_mode)


def assert_bn_mode(net: nn.Module, mode: str) -> None:
    wrong = [n for n, m in net.named_modules()
             if isinstance(m, BN_TYPES) and m.training != (mode == "train")]
    if wrong:
        raise RuntimeError(f"BatchNorm layers {wrong} are not in {mode} mode")


@torch.no_grad()
def extract_features(
    rule: Rule, images: torch.Tensor, groups: list[list[int]], layers: list[str],
    batch_size: int, device: torch.device,
) -> dict[str, np.ndarray]:
    """Per condition, each layer's time-averaged activity (mean over the condition's images)."""
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    for start in range(0, len(images), batch_size):
        feats = rule.features(images[start : start + batch_size].to(device), layers)
        for name in layers:
            chunks[name].append(feats[name].double().cpu())
    out = {}
    for name in layers:
        per_image = torch.cat(chunks[name])
        out[name] = torch.stack([per_image[idx].mean(0) for idx in groups]).numpy()
    return out


@torch.no_grad()
def accuracy(rule: Rule, data: TrainingSet, batch_size: int, device: torch.device):
    """Held-out loss and accuracy of the rule's classifier, in evaluation mode."""
    loss, correct = 0.0, 0
    for x, y in batches(data.test_images, data.test_labels, batch_size, device=device):
        logits = rule.predict(x)
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    n = len(data.test_labels)
    return loss / n, correct / n


@torch.no_grad()
def firing_stats(
    net: Network, images: torch.Tensor, layers: list[str], batch_size: int, device: torch.device,
) -> dict[str, dict[str, float]]:
    """Per read-out layer of a spiking network over the evaluation stimuli, so that a low rho can
    be told apart from a dead layer: ``firing_rate`` (spikes per unit and time step),
    ``silent_units`` (share of units silent for every stimulus) and ``silent_stimuli`` (share of
    stimuli for which the whole layer is silent: a constant pattern, scored NaN when a whole
    condition is). Units are the layer's outputs as read out, i.e. after a conv block's 2x2 pool.
    """
    spikes = dict.fromkeys(layers, 0.0)
    slots = dict.fromkeys(layers, 0)
    fired: dict[str, torch.Tensor] = {}
    silent = dict.fromkeys(layers, 0)
    for start in range(0, len(images), batch_size):
        _, outputs = net.run(images[start : start + batch_size].to(device))
        for name in layers:
            counts = outputs[name].sum(0).flatten(1).double().cpu()  # [B, units] spike counts
            spikes[name] += float(counts.sum())
            slots[name] += counts.numel() * outputs[name].shape[0]
            active = (counts > 0).any(0)
            fired[name] = active if name not in fired else fired[name] | active
            silent[name] += int((counts.sum(1) == 0).sum())
    return {name: {"firing_rate": spikes[name] / slots[name],
                   "silent_units": 1.0 - float(fired[name].double().mean()),
                   "silent_stimuli": silent[name] / len(images)} for name in layers}


def model_rdm(layer: str, feats: np.ndarray) -> np.ndarray:
    """1 - Pearson r between conditions; all-NaN (scored NaN, with a warning) when some condition
    has a constant pattern, e.g. a spiking layer that stays silent for a stimulus."""
    constant = np.ptp(feats, axis=1) == 0
    if constant.any():
        log.warning("layer %s: %d of %d conditions give a constant pattern (silent layer?); "
                    "its RDM and scores are NaN at this checkpoint", layer, int(constant.sum()),
                    len(feats))
        return np.full((len(feats), len(feats)), np.nan)
    return correlation_rdm(feats)


def score_checkpoint(
    model_rdms: dict[str, np.ndarray], brain: Brain, mask: np.ndarray | None = None
) -> list[dict]:
    """Spearman rho of every layer against every ROI and subject, over ``mask``ed pairs."""
    rows = []
    for layer, rdm in model_rdms.items():
        defined = not np.isnan(rdm).any()
        for roi, subject_rdms in brain.rdms.items():
            for subject, brain_rdm in zip(brain.subjects, subject_rdms):
                rho = spearman(rdm, brain_rdm, mask) if defined else float("nan")
                rows.append({"layer": layer, "roi": roi, "subject": subject, "rho": rho})
    return rows


def checkpoint_scores(
    rule: Rule, cfg: Config, eval_images: torch.Tensor, groups: list[list[int]], brain: Brain,
    device: torch.device,
) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Model RDMs of the read-out layers now, and their scores against every ROI and subject."""
    feats = extract_features(rule, eval_images, groups, cfg.rsa.layers, cfg.rsa.eval_batch_size,
                             device)
    rdms = {name: model_rdm(name, f) for name, f in feats.items()}
    mask = brain.cross_run_pairs() if cfg.rsa.pairs == "cross_run" else None
    return rdms, score_checkpoint(rdms, brain, mask)


def rng_state(gen: torch.Generator) -> dict:
    return {"torch": torch.get_rng_state(), "gen": gen.get_state(),
            "numpy": np.random.get_state(), "python": random.getstate()}


def restore_rng(state: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"].cpu())
    gen.set_state(state["gen"].cpu())
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


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


def run(cfg: Config, out_dir: Path, config_yaml: str, job_num: int = 0) -> pd.DataFrame:
    """Train and track; returns the tidy RSA table also written to ``out_dir/rsa.csv``.
    A run directory holding checkpoints of the same config is resumed after its last one (or
    skipped when complete), so a killed job ends with the same numbers as an uninterrupted one.
    With ``evaluate_from`` the checkpoints of that run are scored instead of training (e.g. the
    same weights at another evaluation resolution)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.keep_freed_memory:
        keep_freed_memory()
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device, job_num)
    meta = run_metadata(config_yaml, device)
    write_metadata(out_dir, meta)

    brain = load_brain(cfg.brain)  # first: bad brain input fails before the training set loads
    data = load_training_data(cfg.data, run_seed=cfg.seed)
    unique = sorted({p for paths in brain.image_paths for p in paths})
    index = {p: i for i, p in enumerate(unique)}
    groups = [[index[p] for p in paths] for paths in brain.image_paths]
    eval_images = load_images(unique, cfg.brain.resolution, cfg.brain.interpolation)
    log.info("training set %d images (%d classes); %d evaluation conditions at %d px; "
             "ROIs %s; subjects %s; device %s", len(data.train_labels), len(data.classes),
             len(brain.stimuli), cfg.brain.resolution, brain.rois, brain.subjects, meta["device"])

    seed_everything(cfg.seed)
    net = Network(cfg, len(data.classes)).to(device)
    checkpoints = list(cfg.checkpoints)
    rule = make_rule(cfg.rule, net, n_epochs=max(checkpoints))
    if not rule.trains:
        checkpoints = [0]
    ident = {"rule": cfg.rule.name, "neuron": cfg.neuron.name, "encoding": cfg.encoding.name,
             "readout": cfg.readout.name, "seed": cfg.seed}
    rsa_rows: list[dict] = []
    train_rows: list[dict] = []
    probe_log: list[dict] = []
    dyn_rows: list[dict] = []
    snapshots: list[dict] = []
    images_seen = 0
    model_rdms: dict[int, dict[str, np.ndarray]] = {}
    gen = torch.Generator().manual_seed(cfg.seed)
    bs = cfg.data.batch_size
    start = 0
    sources = source_checkpoints(cfg.evaluate_from) if cfg.evaluate_from else {}
    if sources:
        checkpoints = sorted(sources)
    last = find_checkpoint(out_dir) if cfg.resume and not sources else None
    if last is not None:
        state = torch.load(last, map_location=device, weights_only=False)
        if state["config"] != config_yaml:
            raise RuntimeError(f"{out_dir} holds a run with another config ({last}); "
                               "use a new output directory or resume=false")
        net.load_state_dict(state["model"])
        rule.load_state_dict(state["rule"])
        restore_rng(state["rng"], gen)
        rsa_rows, train_rows = state["rsa_rows"], state["train_rows"]
        probe_log, dyn_rows = state["probe_log"], state["dyn_rows"]
        snapshots, images_seen = state["snapshots"], state["images_seen"]
        model_rdms = read_model_rdms(out_dir / "results.h5", state["epoch"])
        start = state["epoch"] + 1
        if start > max(checkpoints):
            log.info("%s is complete (last checkpoint epoch %d): nothing to do",
                     out_dir, state["epoch"])
            return pd.DataFrame(rsa_rows)
        log.info("resuming %s after checkpoint epoch %d", out_dir, state["epoch"])

    epochs = tqdm(range(start, max(checkpoints) + 1), desc=f"{cfg.rule.name}/{cfg.neuron.name}",
                  unit="epoch", disable=not cfg.progress, initial=start,
                  total=max(checkpoints) + 1)
    for epoch in epochs:
        t0 = time.perf_counter()
        train_loss = train_acc = float("nan")
        if sources:  # evaluation only: the weights come from another run's checkpoint
            if epoch not in sources:
                continue
            state = torch.load(sources[epoch], map_location=device, weights_only=False)
            net.load_state_dict(state["model"])
            rule.load_state_dict(state["rule"])
        elif epoch > 0:
            set_mode(net, True)
            total, correct, seen = 0.0, 0, 0
            it = batches(data.train_images, data.train_labels, bs, device=device, gen=gen,
                         drop_last=cfg.data.drop_last, do_augment=cfg.data.augment)
            for x, y in it:
                loss, ok = rule.train_batch(x, y)
                total, correct, seen = total + loss, correct + ok, seen + len(y)
                interval, before = cfg.dynamics.interval, images_seen + seen - len(y)
                if interval and (images_seen + seen) // interval > before // interval:
                    at = epoch - 1 + seen / len(data.train_labels)
                    set_mode(net, False, cfg.bn_eval_mode)
                    rows = checkpoint_scores(rule, cfg, eval_images, groups, brain, device)[1]
                    dyn_rows += [{**ident, "epoch": at, "images": images_seen + seen, **row}
                                 for row in rows]
                    snapshots.append({"images": images_seen + seen, "epoch": at,
                                      "arrays": rule.dynamics()})
                    write_csv(pd.DataFrame(dyn_rows), out_dir / "dynamics_rsa.csv")
                    set_mode(net, True)
            images_seen += seen
            rule.end_epoch()
            train_loss, train_acc = total / max(seen, 1), correct / max(seen, 1)
        set_mode(net, False)
        test_loss, test_acc = accuracy(rule, data, bs, device)
        train_rows.append({"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                           "test_loss": test_loss, "test_acc": test_acc,
                           "seconds": time.perf_counter() - t0})
        write_csv(pd.DataFrame(train_rows), out_dir / "train.csv")
        if rule.log_rows():
            write_csv(pd.DataFrame([{**ident, **r} for r in rule.log_rows()]),
                      out_dir / "rule_log.csv")
        if epoch in checkpoints:
            set_mode(net, False, cfg.bn_eval_mode)
            model_rdms[epoch], rows = checkpoint_scores(rule, cfg, eval_images, groups, brain,
                                                        device)
            firing = (firing_stats(net, eval_images, cfg.rsa.layers, cfg.rsa.eval_batch_size,
                                   device) if cfg.neuron.name in SPIKING_NEURONS else {})
            for row in rows:
                rsa_rows.append({**ident, "epoch": epoch, **row,
                                 "resolution": cfg.brain.resolution,
                                 "selection": cfg.brain.selection, "pairs": cfg.rsa.pairs,
                                 "n_stimuli": len(brain.stimuli),
                                 **firing.get(row["layer"], {})})
            if cfg.readout.probe_layers:
                probe_log += [{**ident, "epoch": epoch, **r}
                              for r in probe_rows(cfg, net, data, device)]
                write_csv(pd.DataFrame(probe_log), out_dir / "probe.csv")
                set_mode(net, False)
            rsa = pd.DataFrame(rsa_rows)
            write_csv(rsa, out_dir / "rsa.csv")
            write_results_h5(out_dir / "results.h5", brain, model_rdms, meta, snapshots)
            plot_trajectory(rsa, out_dir / "rsa_trajectory.png")
            if sources:
                continue
            # last: a checkpoint on disk means everything up to its epoch is written
            save_checkpoint(out_dir / "checkpoints" / f"epoch_{epoch}.pt",
                            {"epoch": epoch, "model": net.state_dict(),
                             "rule": rule.state_dict(), "config": config_yaml,
                             "rng": rng_state(gen), "rsa_rows": rsa_rows,
                             "train_rows": train_rows, "probe_log": probe_log,
                             "dyn_rows": dyn_rows, "snapshots": snapshots,
                             "images_seen": images_seen})
        epochs.set_postfix(test_acc=f"{test_acc:.3f}")
    return pd.DataFrame(rsa_rows)


def probe_rows(cfg: Config, net: Network, data: TrainingSet, device: torch.device) -> list[dict]:
    """Linear-probe accuracy of each ``readout.probe_layers`` layer (frozen weights)."""
    from snnrsa.probe import linear_probes

    results = linear_probes(net, data.train_images, data.train_labels, data.test_images,
                            data.test_labels, list(cfg.readout.probe_layers), cfg.readout.probe_pool,
                            cfg.readout.probe_c, cfg.readout.probe_max_iter, device=device)
    return [{"layer": r.layer, "probe_train_acc": r.train_acc, "probe_test_acc": r.test_acc,
             "n_features": r.n_features} for r in results]


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

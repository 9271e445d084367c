"""Scoring a network now: activations of the evaluation images -> one RDM per layer -> Spearman
rho against every ROI and subject (``rsa.compare_each``); held-out accuracy; linear probes."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from snnrsa.brain import Brain, load_brain
from snnrsa.data.images import load_images
from snnrsa.data.training import TrainingSet, batches
from snnrsa.model.network import Network
from snnrsa.rsa import correlation_rdm
from snnrsa.rsa.ceiling import loso_noise_ceiling
from snnrsa.rsa.compare import compare_each
from snnrsa.rules import Rule
from snnrsa.schema import Config

log = logging.getLogger("snnrsa.run")
BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass
class EvalSet:
    """The brain RDMs and the images that give each condition's model activity."""

    brain: Brain
    images: torch.Tensor  # every distinct image once
    groups: list[list[int]]  # per condition, the indices of its images in ``images``
    mask: np.ndarray | None  # stimulus pairs scored (None: all)


def load_eval_set(cfg: Config) -> EvalSet:
    brain = load_brain(cfg.brain)
    unique = sorted({p for paths in brain.image_paths for p in paths})
    index = {p: i for i, p in enumerate(unique)}
    groups = [[index[p] for p in paths] for paths in brain.image_paths]
    images = load_images(unique, cfg.brain.resolution, cfg.brain.interpolation)
    mask = brain.cross_fmri_run_pairs() if cfg.rsa.pairs == "cross_fmri_run" else None
    return EvalSet(brain, images, groups, mask)


def noise_ceilings(evalset: EvalSet) -> pd.DataFrame:
    """Each ROI's leave-one-subject-out noise ceiling (per-subject Spearman over the scored
    pairs, as the scores are), where the brain data has at least 2 subjects to leave out."""
    rows = []
    for roi, rdms in evalset.brain.rdms.items():
        if len(rdms) < 2:
            continue
        try:
            lower, upper = loso_noise_ceiling(rdms, "spearman", evalset.mask)
        except ValueError as err:  # e.g. non-finite dissimilarities
            log.warning("no noise ceiling for ROI %s: %s", roi, err)
            continue
        rows.append({"roi": roi, "lower": lower, "upper": upper, "n_subjects": len(rdms)})
    return pd.DataFrame(rows, columns=["roi", "lower", "upper", "n_subjects"])


def set_mode(net: nn.Module, training: bool, bn_mode: str = "eval") -> None:
    """Switch to training or evaluation; at evaluation BatchNorm follows ``bn_mode`` ('train'
    reproduces the study's PC/STDP defect of batch statistics at feature extraction)."""
    net.train(training)
    if not training and bn_mode == "train":
        for m in net.modules():
            if isinstance(m, BN_TYPES):
                m.train(True)
    assert_bn_mode(net, "train" if training else bn_mode)


def calibrate_batch_norm(net: nn.Module, data: TrainingSet, n_images: int, batch_size: int,
                         device: torch.device) -> int:
    """Set every BatchNorm's running statistics to the cumulative average over the first
    ``n_images`` training images (train-mode forward, no gradient, no augmentation). Weights,
    the optimiser and every random stream are untouched, so training is the same; only what
    evaluation sees before BatchNorm has tracked enough batches changes: a spiking network with
    identity statistics gets currents far from threshold. Returns the images used (0: no
    BatchNorm)."""
    bns = [m for m in net.modules() if isinstance(m, BN_TYPES) and m.track_running_stats]
    n = min(n_images, len(data.train_labels))
    if not bns or n == 0:
        return 0
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the calibration batches
    was_training = net.training
    net.train(True)
    cuda = [device] if device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=cuda):
        for x, _ in batches(data.train_images[:n], data.train_labels[:n], batch_size,
                            device=device):
            net(x)
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
        m.num_batches_tracked.zero_()
    net.train(was_training)
    return n


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
def accuracy(rule: Rule, data: TrainingSet, batch_size: int, device: torch.device,
             subset: torch.Tensor | None = None) -> tuple[float, float]:
    """Held-out loss and accuracy of the rule's classifier, in evaluation mode, over the test
    images ``subset`` indexes (all when None)."""
    images, labels = data.test_images, data.test_labels
    if subset is not None:
        images, labels = images[subset], labels[subset]
    loss, correct = 0.0, 0
    for x, y in batches(images, labels, batch_size, device=device):
        logits = rule.predict(x)
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    n = len(labels)
    return loss / n, correct / n


def held_out_subset(n_available: int, n: int | None, seed: int) -> torch.Tensor | None:
    """Indices of ``n`` test images drawn once from ``seed`` (None: all), so that every epoch,
    run seed and rule is scored on the same images."""
    if n is not None and not 0 < n <= n_available:
        raise ValueError(f"test_images={n} must lie in 1..{n_available} (held-out images "
                         "available), or be null for all")
    if n is None or n == n_available:
        return None
    return torch.from_numpy(np.sort(np.random.default_rng(seed).choice(n_available, n,
                                                                       replace=False)))


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
    """Spearman rho of every layer against every ROI and subject, over ``mask``ed pairs; each
    RDM is ranked once. Rows carry their labels: layer, roi, subject."""
    layers, rois = list(model_rdms), brain.rois
    defined = [name for name in layers if not np.isnan(model_rdms[name]).any()]
    rho = np.full((len(layers), len(rois), len(brain.subjects)), np.nan)
    if defined:
        scores = compare_each(np.stack([model_rdms[name] for name in defined]),
                              np.stack([brain.rdms[roi] for roi in rois]), "spearman", mask)
        rho[[layers.index(name) for name in defined]] = scores
    return [{"layer": layer, "roi": roi, "subject": subject, "rho": float(rho[i, j, k])}
            for i, layer in enumerate(layers) for j, roi in enumerate(rois)
            for k, subject in enumerate(brain.subjects)]


def checkpoint_scores(rule: Rule, cfg: Config, evalset: EvalSet, device: torch.device
                      ) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Model RDMs of the read-out layers now, and their scores against every ROI and subject."""
    feats = extract_features(rule, evalset.images, evalset.groups, cfg.rsa.layers,
                             cfg.rsa.eval_batch_size, device)
    rdms = {name: model_rdm(name, f) for name, f in feats.items()}
    return rdms, score_checkpoint(rdms, evalset.brain, evalset.mask)


def probe_rows(cfg: Config, net: Network, data: TrainingSet, device: torch.device) -> list[dict]:
    """Linear-probe accuracy of each ``readout.probe_layers`` layer (frozen weights)."""
    from snnrsa.model.linear_probe import linear_probes

    results = linear_probes(net, data.train_images, data.train_labels, data.test_images,
                            data.test_labels, list(cfg.readout.probe_layers), cfg.readout.probe_pool,
                            cfg.readout.probe_c, cfg.readout.probe_max_iter, device=device)
    return [{"layer": r.layer, "probe_train_acc": r.train_acc, "probe_test_acc": r.test_acc,
             "n_features": r.n_features} for r in results]

"""The interface every learning rule implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from snnrsa.model.backbone import BlockSpec
from snnrsa.model.network import Network


@contextmanager
def frozen_bn_stats(net: nn.Module) -> Iterator[None]:
    """BatchNorm keeps using batch statistics but stops updating its running statistics, so
    extra passes over a batch (PC's inference, diagnostics on a probe batch) do not count as
    extra batches."""
    bns = [m for m in net.modules()
           if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in bns:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in bns:
            m.track_running_stats = True


@contextmanager
def training_mode_probe(net: nn.Module, seed: int = 0) -> Iterator[None]:
    """Run a diagnostic pass as training sees it (BatchNorm on batch statistics, dropout on)
    without side effects: running statistics frozen, a fixed random stream (dropout masks and
    stochastic encodings repeat between passes, the run's stream is untouched), every module's
    mode restored afterwards."""
    modes = {m: m.training for m in net.modules()}
    devices = [d for d in {p.device for p in net.parameters()} if d.type == "cuda"]
    try:
        net.train()
        with frozen_bn_stats(net), torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield
    finally:
        for m, training in modes.items():
            m.training = training


class Rule(ABC):
    """A learning rule bound to one network (its config schema: ``snnrsa.schema.RULE_SCHEMAS``);
    ``trains = False`` marks a rule evaluated at epoch 0 only (the untrained baseline);
    ``classifies = False`` a rule without a class read-out (its accuracy: the linear probe)."""

    trains: bool = True
    classifies: bool = True  # False: no class read-out (train/test loss and accuracy are NaN)

    @classmethod
    def check(cls, cfg: Any) -> None:
        """Reject a whole-config combination this rule cannot run (called by
        ``config.resolve`` before any data is loaded); ``cfg`` is the typed ``Config``."""

    @classmethod
    def block_spec(cls, cfg: Any) -> BlockSpec | None:
        """The rule's own conv-block parts for the network it trains (``cfg``: the typed
        ``Config``), built by ``snnrsa.rules.build_network``; None: the shared backbone as is."""
        return None

    def __init__(self, cfg: Any, net: Network, n_epochs: int) -> None:
        self.cfg = cfg
        self.net = net
        self.n_epochs = n_epochs

    @abstractmethod
    def train_batch(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
        """Update the network on one batch; return (summed loss, number correct)."""

    def features(self, images: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        """Activity per read-out layer for RSA; rules with their own dynamics (e.g. PC's
        post-inference values) override this."""
        return self.net.features(images, layers)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Class scores for held-out accuracy; rules that classify after their own dynamics
        (the study's PC: after inference) override this."""
        return self.net(images)

    def dynamics(self) -> dict[str, Any]:
        """Arrays describing the rule's state now (e.g. STDP weights, receptive fields), stored
        at every sub-epoch snapshot under ``/dynamics`` in results.h5."""
        return {}

    def log_rows(self) -> list[dict[str, Any]]:
        """Rule diagnostics (alignment angles, energies, STDP convergence...) written by the
        run loop to ``rule_log.csv``, one dict per row."""
        return []

    def trained_images(self, layer: str) -> int | None:
        """Training images ``layer`` has learnt from; None: every image the run has seen."""
        return None

    def end_epoch(self) -> None:
        """Hook for per-epoch schedules."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` saved (optimiser, schedule) to resume training."""

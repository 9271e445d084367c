"""Everything a run accumulates, as one value: saved whole in every checkpoint and restored whole
on resume, so a new log is one field here and nothing else."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

# keys of checkpoints written before RunState had these names
LEGACY_KEYS = {"probe_log": "probe_rows", "dyn_rows": "dynamics_rows"}


@dataclass
class RunState:
    """The run's logs and counters (checkpointed) and its data-order generator. ``model_rdms``
    (epoch -> layer -> RDM) lives in results.h5, not in the checkpoint."""

    gen: torch.Generator
    images_seen: int = 0
    rsa_rows: list[dict] = field(default_factory=list)
    train_rows: list[dict] = field(default_factory=list)
    probe_rows: list[dict] = field(default_factory=list)  # linear-probe accuracy per checkpoint
    dynamics_rows: list[dict] = field(default_factory=list)  # sub-epoch scores (dynamics_rsa.csv)
    snapshots: list[dict] = field(default_factory=list)  # the rule's arrays at each dynamics step
    model_rdms: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    start_epoch: int = 0

    @staticmethod
    def logged() -> list[str]:
        """The fields a checkpoint carries."""
        return [f.name for f in fields(RunState) if f.name not in ("gen", "model_rdms",
                                                                   "start_epoch")]

    def to_checkpoint(self, epoch: int, model: dict, rule: dict, config: str) -> dict[str, Any]:
        """The checkpoint of everything up to and including ``epoch``."""
        return {"epoch": epoch, "model": model, "rule": rule, "config": config,
                "rng": rng_state(self.gen), **{k: getattr(self, k) for k in self.logged()}}

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], gen: torch.Generator,
                        model_rdms: dict[int, dict[str, np.ndarray]]) -> RunState:
        """The state after ``ckpt['epoch']``; restores the random streams as they were then."""
        restore_rng(ckpt["rng"], gen)
        logs = {LEGACY_KEYS.get(k, k): v for k, v in ckpt.items()}
        return cls(gen=gen, model_rdms=model_rdms, start_epoch=ckpt["epoch"] + 1,
                   **{k: logs[k] for k in cls.logged()})


def rng_state(gen: torch.Generator) -> dict:
    return {"torch": torch.get_rng_state(), "gen": gen.get_state(),
            "numpy": np.random.get_state(), "python": random.getstate()}


def restore_rng(state: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"].cpu())
    gen.set_state(state["gen"].cpu())
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

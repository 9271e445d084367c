"""Shared fixtures: small configs composed through Hydra exactly as the CLI does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from snnrsa.config import Config, resolve

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SHARED = REPO.parent / "shared" / "data"

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def needs_shared(path: Path) -> pytest.MarkDecorator:
    """Skip where ``path`` is missing from the shared data folder (``../shared/data`` beside the
    checkout). CI accepts this skip reason and no other, so the wording is part of the contract."""
    return pytest.mark.skipif(not path.exists(),
                              reason=f"shared data folder absent: {path} not found")


def compose_cfg(overrides: list[str] | None = None, return_hydra_config: bool = False):
    """The config Hydra composes from ``conf/`` for these overrides, as the command line does."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides or [],
                       return_hydra_config=return_hydra_config)


def typed_cfg(overrides: list[str] | None = None) -> Config:
    """``compose_cfg`` resolved and validated by the composition root (``snnrsa.config.resolve``)."""
    return resolve(compose_cfg(overrides))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One synthetic-data cache for the whole session (generated once, reused)."""
    return tmp_path_factory.mktemp("snnrsa_cache")

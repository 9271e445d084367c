"""Every option of every config group and every experiment preset composes and validates: a new
``conf/<group>/<option>.yaml`` is covered here without writing a test."""

from __future__ import annotations

from pathlib import Path

import pytest

from snnrsa.config import ConfigError

from conftest import CONF, typed_cfg

# what an option cannot run without (paths are only type-checked here, never read)
SPIKES = ["neuron=snntorch_lif", "encoding=latency"]
THINGS = ["brain.fmri_dir=/data/fmri", "brain.images_dir=/data/images"]
COMPANIONS: dict[str, list[str]] = {
    "rule=stdp": SPIKES, "rule=stdp_trace": SPIKES,
    "readout=spike_count": ["neuron=snntorch_lif"],
    "encoding=latency": ["neuron=snntorch_lif"],
    "brain=things": THINGS,
    "brain=rdm_file": ["brain.path=/data/rdms.npz", "brain.images_dir=/data/images",
                       "++brain.rois={EVC: evc}"],
    "data=imagefolder": ["data.train_dir=/data/train", "data.test_dir=/data/test"],
    "experiment=leutenegger2026_published": THINGS,
    "experiment=leutenegger2026_corrected": THINGS,
    "experiment=resolution_sweep": THINGS,
}
SKIP_GROUPS = {"hydra"}  # launchers: tests/test_presets.py composes them with a sweep
EXTRA_GROUPS = {"study_rule", "study_input"}  # not in config.yaml's defaults: appended with +


def options() -> list[str]:
    return [f"{group.name}={yaml.stem}" for group in sorted(Path(CONF).iterdir())
            if group.is_dir() and group.name not in SKIP_GROUPS
            for yaml in sorted(group.glob("*.yaml"))]


def test_every_group_is_listed() -> None:
    groups = {o.split("=")[0] for o in options()}
    assert {"backbone", "neuron", "encoding", "readout", "rule", "data", "brain", "rsa",
            "experiment", "study_rule", "study_input"} <= groups


@pytest.mark.parametrize("option", options())
def test_option_composes_and_validates(option: str) -> None:
    from omegaconf import OmegaConf

    group, name = option.split("=")
    plus = "+" if group in EXTRA_GROUPS else ""
    cfg = typed_cfg([plus + option, *COMPANIONS.get(option, [])])
    declared = OmegaConf.load(Path(CONF) / group / f"{name}.yaml").get("name")
    if declared is not None:  # the option is the schema its yaml names
        assert getattr(cfg, group).name == declared


def test_an_option_missing_its_companions_fails_naming_keys() -> None:
    with pytest.raises(ConfigError, match="encoding=analog"):
        typed_cfg(["rule=stdp_trace", "neuron=snntorch_lif"])

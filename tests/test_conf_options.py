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


# old names (issue 14) -> the new name their message must give; ``readout=probe`` is a yaml that
# exists only to fail that way
RENAMED = {"readout=probe": "readout=linear_probe", "rsa.pairs=cross_run": "rsa.pairs=cross_fmri_run",
           "+brain.runs_per_session=2": "brain.fmri_runs_per_session"}


def options() -> list[str]:
    return [f"{group.name}={yaml.stem}" for group in sorted(Path(CONF).iterdir())
            if group.is_dir() and group.name not in SKIP_GROUPS
            for yaml in sorted(group.glob("*.yaml")) if f"{group.name}={yaml.stem}" not in RENAMED]


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


@pytest.mark.parametrize("old", sorted(RENAMED))
def test_an_old_name_fails_naming_the_new_one(old: str) -> None:
    """Old keys that the README used to show fail before any data, naming their successor."""
    with pytest.raises(ConfigError, match=f"{old.split('=')[0].lstrip('+')}.*renamed: use {RENAMED[old]}"):
        typed_cfg([old])


def test_an_old_key_on_the_command_line_fails_naming_the_new_one() -> None:
    """Without ``+`` Hydra refuses an unknown key before the schema sees it: the CLI checks first."""
    from snnrsa.cli import check_renamed_keys

    with pytest.raises(SystemExit, match="brain.runs_per_session was renamed: use "
                                         "brain.fmri_runs_per_session"):
        check_renamed_keys(["rule=bp", "brain.runs_per_session=2"])
    check_renamed_keys(["rule=bp", "brain.fmri_runs_per_session=2"])


def test_an_option_missing_its_companions_fails_naming_keys() -> None:
    with pytest.raises(ConfigError, match="encoding=analog"):
        typed_cfg(["rule=stdp_trace", "neuron=snntorch_lif"])

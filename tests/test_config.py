"""Config composition and validation: impossible combinations fail early, naming the keys."""

from __future__ import annotations

import pytest

from snnrsa.config import ConfigError, layer_names

from conftest import typed_cfg


def test_default_composes_and_validates() -> None:
    cfg = typed_cfg([])
    assert cfg.neuron.name == "rate" and cfg.rule.name == "bp"
    assert cfg.brain.rois["LOC"] == ["lLOC", "rLOC"]
    assert layer_names(cfg) == ["conv1", "conv2", "conv3", "fc1"]


def test_full_experiment_has_study_checkpoints() -> None:
    assert typed_cfg(["experiment=full"]).checkpoints == [0, 1, 2, 5, 10, 20, 30, 40]


@pytest.mark.parametrize(
    ("overrides", "keys"),
    [
        (["neuron=snntorch_lif", "neuron.time_steps=1"], ["neuron.time_steps"]),
        (["readout=spike_count"], ["readout=spike_count", "neuron=rate"]),
        (["neuron=norse_lif", "neuron.reset=subtract"], ["neuron.reset"]),
        (["neuron=norse_lif", "neuron.surrogate=atan"], ["neuron.surrogate"]),
        (["encoding=latency"], ["encoding=latency", "neuron.time_steps"]),
        (["checkpoints=[2,1]"], ["checkpoints"]),
        (["rsa.layers=[conv1,conv9]"], ["rsa.layers", "conv9"]),
        (["brain.resolution=4"], ["brain.resolution"]),
        (["neuron=snntorch_lif", "neuron.beta=1.5"], ["neuron.beta"]),
        (["neuron=snntorch_lif", "neuron.bn_alpha=0"], ["neuron.bn_alpha"]),
        (["encoding=poisson", "encoding.p_max=0"], ["encoding.p_max"]),
        (["neuron.name=izhikevich"], ["neuron.name", "izhikevich"]),
        (["rule.name=magic"], ["rule.name", "magic"]),
        (["device=tpu"], ["device"]),
    ],
)
def test_impossible_configs_name_the_keys(overrides: list[str], keys: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        typed_cfg(overrides)
    for key in keys:
        assert key in str(err.value)


def test_unknown_key_and_wrong_type_are_rejected() -> None:
    with pytest.raises(ConfigError, match="lrr"):
        typed_cfg(["+rule.lrr=0.1"])
    with pytest.raises(ConfigError, match="time_steps"):
        typed_cfg(["neuron.time_steps=many"])


def test_unset_data_paths_are_named_together() -> None:
    with pytest.raises(ConfigError) as err:
        typed_cfg(["brain=things"])
    assert "brain.fmri_dir" in str(err.value) and "brain.images_dir" in str(err.value)


def _choice_fields() -> list[tuple[str, str, tuple[str, ...]]]:
    from dataclasses import fields

    from snnrsa.schema import RULE_SCHEMAS

    return [(rule, f.name, f.metadata["choices"]) for rule, schema in RULE_SCHEMAS.items()
            for f in fields(schema) if "choices" in f.metadata]


@pytest.mark.parametrize(("rule", "key", "allowed"), _choice_fields())
def test_rule_option_typo_names_the_key_and_the_allowed_values(rule: str, key: str,
                                                               allowed: tuple[str, ...]) -> None:
    """Every rule option with fixed values is checked at composition (before any data loads):
    the error names the key, the bad value and every allowed value."""
    with pytest.raises(ConfigError) as err:
        typed_cfg([f"rule={rule}", f"rule.{key}=typo"])
    msg = str(err.value)
    assert f"rule.{key}='typo'" in msg
    assert all(repr(value) in msg for value in allowed)


def test_misspelt_rule_key_lists_the_rules_keys() -> None:
    with pytest.raises(ConfigError) as err:
        typed_cfg(["rule=fa", "+rule.feedbak=fa"])
    assert "rule.feedbak" in str(err.value) and "'feedback'" in str(err.value)


def test_schema_is_the_leaf() -> None:
    """snnrsa.schema imports nothing else of snnrsa, so any module may import it (no circle)."""
    import subprocess
    import sys

    code = ("import sys, snnrsa.schema; "
            "print(sorted(m for m in sys.modules if m.startswith('snnrsa') "
            "and not m.startswith('snnrsa.schema') and m != 'snnrsa'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

"""Checks of a typed ``Config`` that need no data: every field's allowed values, and the value
ranges and combinations that cannot work. Each rule adds its own ``check`` (``snnrsa/rules/``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from snnrsa.schema._field import RENAMED_VALUES, ConfigError
from snnrsa.schema.groups import SPIKING_NEURONS, STRUCT_AXIS_ROLES, Config, layer_names


def check_choices(node: Any, prefix: str = "") -> None:
    """Every ``choice`` field anywhere in ``node`` holds one of its allowed values."""
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        key = f"{prefix}{f.name}"
        allowed = f.metadata.get("choices")
        if allowed is not None and value not in allowed:
            if (key, value) in RENAMED_VALUES:
                old, new = RENAMED_VALUES[key, value]
                raise ConfigError(f"{old} was renamed: use {new}")
            raise ConfigError(f"{key}={value!r} is not one of {list(allowed)}")
        if dataclasses.is_dataclass(value):
            check_choices(value, f"{key}.")


def validate(cfg: Config) -> None:
    """Reject impossible values and combinations before any work, naming the offending keys."""
    check_choices(cfg)
    _check_brain(cfg)
    _check_neuron(cfg)
    _check_coding(cfg)
    _check_layers(cfg)
    _check_sizes_and_run(cfg)


def _check_brain(cfg: Config) -> None:
    if cfg.brain.name == "rdm_file":
        axes = cfg.brain.struct_axes
        bad = [a for a in axes if a not in STRUCT_AXIS_ROLES]
        twice = [r for r in ("subject", "session") if axes.count(r) > 1]
        if bad or twice:
            raise ConfigError(f"brain.struct_axes={axes}: each axis is one of "
                              f"{list(STRUCT_AXIS_ROLES)}, subject and session at most once")


def _check_neuron(cfg: Config) -> None:
    spiking = cfg.neuron.name in SPIKING_NEURONS
    if spiking and cfg.neuron.time_steps < 2:
        raise ConfigError(
            f"neuron={cfg.neuron.name} with neuron.time_steps={cfg.neuron.time_steps}: "
            "a spiking neuron needs at least 2 time steps to express a rate"
        )
    if cfg.neuron.time_steps < 1:
        raise ConfigError(f"neuron.time_steps={cfg.neuron.time_steps} must be >= 1")
    if not 0.0 <= cfg.neuron.beta < 1.0:
        raise ConfigError(f"neuron.beta={cfg.neuron.beta} must lie in [0, 1)")
    if cfg.neuron.threshold <= 0:
        raise ConfigError(f"neuron.threshold={cfg.neuron.threshold} must be > 0")
    if not isinstance(cfg.neuron.bn_calibration, int) or cfg.neuron.bn_calibration < 0:
        raise ConfigError(f"neuron.bn_calibration={cfg.neuron.bn_calibration!r} must be an integer "
                          ">= 0 (training images for BatchNorm statistics; 0 = off)")
    if cfg.neuron.bn_alpha is not None and cfg.neuron.bn_alpha <= 0:
        raise ConfigError(f"neuron.bn_alpha={cfg.neuron.bn_alpha} must be > 0, or null for "
                          "plain BatchNorm")
    if cfg.neuron.name == "norse_lif" and cfg.neuron.reset != "zero":
        raise ConfigError(
            f"neuron=norse_lif with neuron.reset={cfg.neuron.reset!r}: norse's LIF cell resets "
            "to zero only; use neuron.reset=zero or neuron=snntorch_lif"
        )
    if cfg.neuron.name == "norse_lif" and (
        cfg.neuron.surrogate != "fast_sigmoid" or cfg.neuron.surrogate_slope != 1.0
    ):
        raise ConfigError(
            f"neuron=norse_lif with neuron.surrogate={cfg.neuron.surrogate} "
            f"neuron.surrogate_slope={cfg.neuron.surrogate_slope}: norse 1.1's SuperSpike ignores "
            "its alpha and equals fast_sigmoid with slope 1; set those two values"
        )


def _check_coding(cfg: Config) -> None:
    spiking = cfg.neuron.name in SPIKING_NEURONS
    if cfg.readout.name == "spike_count" and not spiking:
        raise ConfigError(
            f"readout=spike_count with neuron={cfg.neuron.name}: spike counts need a spiking "
            "neuron (snntorch_lif or norse_lif); use readout=rate or readout=membrane"
        )
    if cfg.encoding.name == "latency" and cfg.neuron.time_steps < 2:
        raise ConfigError(
            f"encoding=latency with neuron.time_steps={cfg.neuron.time_steps}: latency coding "
            "needs at least 2 time steps to order spikes"
        )
    if not 0.0 < cfg.encoding.p_max <= 1.0:
        raise ConfigError(f"encoding.p_max={cfg.encoding.p_max} must lie in (0, 1]")


def _check_layers(cfg: Config) -> None:
    cps = cfg.checkpoints
    if not cps or any(e < 0 for e in cps) or sorted(set(cps)) != list(cps):
        raise ConfigError(f"checkpoints={cps} must be a non-empty increasing list of epochs >= 0")
    offered = layer_names(cfg)
    unknown = [layer for layer in cfg.rsa.layers if layer not in offered]
    if unknown or not cfg.rsa.layers:
        raise ConfigError(f"rsa.layers={cfg.rsa.layers}: unknown {unknown}; offered {offered}")
    if cfg.rsa.pool_grid < 1:
        raise ConfigError(f"rsa.pool_grid={cfg.rsa.pool_grid} must be >= 1 (cells per side of the "
                          "grid that rsa.layer_pooling=grid averages each conv map to)")
    unknown = [layer for layer in cfg.readout.probe_layers if layer not in offered]
    if unknown:
        raise ConfigError(f"readout.probe_layers={cfg.readout.probe_layers}: unknown {unknown}; "
                          f"offered {offered}")
    tc = cfg.backbone.time_checkpoint
    if not 0 <= tc <= cfg.neuron.time_steps:
        raise ConfigError(
            f"backbone.time_checkpoint={tc} with neuron.time_steps={cfg.neuron.time_steps}: must "
            "be 0 (off, full BPTT) or a chunk length 1..neuron.time_steps (time steps recomputed "
            "together in backward; smaller = less memory, more recomputation)"
        )


def _check_sizes_and_run(cfg: Config) -> None:
    if not cfg.backbone.channels or any(c < 1 for c in cfg.backbone.channels):
        raise ConfigError(f"backbone.channels={cfg.backbone.channels} must be positive ints")
    min_side = 2 ** len(cfg.backbone.channels)
    for key, side in (("data.image_size", cfg.data.image_size),
                      ("brain.resolution", cfg.brain.resolution)):
        if side < min_side:
            raise ConfigError(
                f"{key}={side} is too small for {len(cfg.backbone.channels)} 2x2 pools "
                f"(needs >= {min_side})"
            )
    if len(cfg.data.mean) != cfg.backbone.in_channels or len(cfg.data.std) != len(cfg.data.mean):
        raise ConfigError(
            f"data.mean/data.std need {cfg.backbone.in_channels} values "
            f"(backbone.in_channels), got {cfg.data.mean} / {cfg.data.std}"
        )
    if cfg.data.name == "cifar10" and cfg.data.image_size != 32:
        raise ConfigError(f"data=cifar10 with data.image_size={cfg.data.image_size}: CIFAR-10 "
                          "images are 32 px; use data=imagefolder to resize another set")
    if cfg.rsa.pairs == "cross_fmri_run" and cfg.brain.name == "rdm_file":
        raise ConfigError("rsa.pairs=cross_fmri_run with brain=rdm_file: precomputed RDMs carry no "
                          "session/run labels; use rsa.pairs=all")
    if cfg.dynamics.interval < 0:
        raise ConfigError(f"dynamics.interval={cfg.dynamics.interval} must be >= 0 (0 = off)")
    if cfg.test_every < 0:
        raise ConfigError(f"test_every={cfg.test_every} must be >= 0 (0 = held-out accuracy at "
                          "checkpoint epochs only, k = also every k epochs)")
    if cfg.test_images is not None and cfg.test_images < 1:
        raise ConfigError(f"test_images={cfg.test_images} must be >= 1, or null for the whole "
                          "test set")
    if not cfg.brain.rois:
        raise ConfigError("brain.rois is empty: name at least one ROI")
    if cfg.device != "auto" and not (cfg.device == "cpu" or cfg.device.startswith("cuda")):
        raise ConfigError(f"device={cfg.device!r} must be auto, cpu, cuda or cuda:N")

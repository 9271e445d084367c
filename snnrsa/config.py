"""Typed schemas for the config groups, and the checks that reject impossible combinations.

Hydra composes plain YAML; here each group is merged into a dataclass so that a misspelt key or a
value of the wrong type fails before any work, naming the key. Groups whose keys differ by choice
(rule, data, brain) pick their schema by ``name``; each rule's schema is the ``schema`` attribute
of its class in ``snnrsa/rules/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A config value or combination that cannot work; the message names the keys."""


@dataclass
class BackboneConfig:
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    kernel_size: int = 3
    batch_norm: bool = True
    fc_units: list[int] = field(default_factory=lambda: [512])
    dropout: float = 0.0
    pool_to: int = 4  # Conv-map side before FC1; larger maps are adaptive-average-pooled to it
    init: str = "default"  # default (PyTorch kaiming_uniform a=sqrt(5)) | kaiming_normal
    in_channels: int = 3
    # BPTT memory bound: 0 = off (full BPTT, every activation kept for backward); k > 0 = each
    # conv block keeps only its input and runs / recomputes conv, BN, neuron and pool k time steps
    # at a time (gradients equal to full BPTT; costs recomputation, tools/bench_memory.py)
    time_checkpoint: int = 0


@dataclass
class NeuronConfig:
    name: str = "rate"  # rate | snntorch_lif | norse_lif
    time_steps: int = 1
    beta: float = 0.9  # membrane decay per step; norse gets tau_mem_inv = (1 - beta) / dt
    threshold: float = 1.0
    reset: str = "zero"  # zero | subtract
    surrogate: str = "fast_sigmoid"  # fast_sigmoid | atan
    surrogate_slope: float = 1.0
    impl: str = "fast"  # fast (one fused autograd op over time) | library (the idiomatic loop)
    # threshold-dependent BatchNorm (tdBN, Zheng et al. 2021) for spiking neurons: the BatchNorm
    # before a LIF neuron starts at weight bn_alpha * threshold, i.e. normalises its current to
    # alpha * V_th; None = plain BatchNorm init (weight 1 whatever the threshold)
    bn_alpha: float | None = None


@dataclass
class EncodingConfig:
    name: str = "analog"  # analog | poisson | latency
    gain: float = 1.0  # analog: input current = gain * normalised image
    p_max: float = 1.0  # poisson: spike probability per step at intensity 1
    threshold: float = 0.05  # latency: pixels at or below this intensity never spike


@dataclass
class ReadoutConfig:
    name: str = "rate"  # rate | membrane | spike_count | probe (rate head + linear probes)
    probe_layers: list[str] = field(default_factory=list)  # layers probed at every checkpoint
    probe_pool: int = 2  # conv maps adaptive-average-pooled to this grid before the probe
    probe_c: float = 1.0  # inverse L2 strength of the logistic regression
    probe_max_iter: int = 1000


@dataclass
class SyntheticDataConfig:
    name: str = "synthetic"
    n_train: int = 4000
    n_test: int = 1000
    image_size: int = 32
    data_seed: int = 0  # the image set is fixed across run seeds
    batch_size: int = 128
    drop_last: bool = True
    augment: bool = False  # random horizontal flip + random crop with padding 4
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.25, 0.25, 0.25])


CIFAR_MEAN = [0.4914, 0.4822, 0.4465]
CIFAR_STD = [0.247, 0.243, 0.261]


@dataclass
class ImageSetDataConfig:
    """Keys shared by real image training sets: subset, augmentation, normalisation."""

    name: str = "???"
    n_train: int | None = None  # subset size; None = all
    n_test: int | None = None
    subset: str = "fixed"  # fixed (same subset for every seed, from data_seed) | per_seed
    image_size: int = 32
    data_seed: int = 0
    batch_size: int = 128
    drop_last: bool = True
    augment: bool = True  # random horizontal flip + random crop with padding 4 (the study)
    mean: list[float] = field(default_factory=lambda: list(CIFAR_MEAN))
    std: list[float] = field(default_factory=lambda: list(CIFAR_STD))


@dataclass
class ImageFolderDataConfig(ImageSetDataConfig):
    """Any ``<class>/<image>`` tree (e.g. the CIFAR-10 JPEG subset)."""

    name: str = "imagefolder"
    train_dir: str = "???"
    test_dir: str = "???"


@dataclass
class Cifar10DataConfig(ImageSetDataConfig):
    """torchvision's CIFAR-10 (downloads on first use where the network allows)."""

    name: str = "cifar10"
    root: str = "~/.cache/snnrsa/cifar10"
    download: bool = True


@dataclass
class RDMFileBrainConfig:
    """Precomputed RDM stacks per ROI (one variable each) and the stimulus images in RDM order."""

    name: str = "rdm_file"
    root: str = "."  # folder that relative ``path`` and ``images_dir`` start from
    path: str = "???"
    rois: dict[str, str] = field(default_factory=dict)  # ROI name -> variable in the file
    # numeric variables, MATLAB/numpy order: subject,image,image | image,image,subject |
    # image,image | subject,pair | pair,subject (condensed rows / columns)
    axis_order: str = "subject,image,image"
    # MATLAB struct arrays: role of each axis (or of each axis longer than 1), MATLAB order:
    # subject | session | none; [] = the one axis longer than 1 is the subject axis
    struct_axes: list[str] = field(default_factory=list)
    sessions: str = "mean"  # mean (average each subject's sessions) | separate (also keep them)
    subject_descriptor: str = "subject"  # rsatoolbox files: rdm descriptor naming the subject
    session_descriptor: str = "session"  # rsatoolbox files: rdm descriptor naming the session
    # rsatoolbox files: pattern descriptor holding the image names (RDM order); auto = the one
    # whose values all name images in images_dir, else file order; none = file order
    pattern_descriptor: str = "auto"
    images_dir: str = "???"
    images: list[str] = field(default_factory=list)  # file names in RDM order; [] = sorted glob
    image_glob: str = "*.jpg"
    subjects: list[str] = field(default_factory=list)  # labels; [] = sub-01, sub-02, ...
    resolution: int = 224
    interpolation: str = "bilinear"  # resize filter (snnrsa.data.images.INTERPOLATION)
    selection: str = "file"


def _study_rois() -> dict[str, list[str]]:
    return {"V1": ["V1"], "V2": ["V2"], "V3": ["V3"], "hV4": ["hV4"],
            "LOC": ["lLOC", "rLOC"], "IT": ["IT"]}


@dataclass
class ThingsBrainConfig:
    """THINGS-fMRI single-trial responses as released, and the THINGS images."""

    name: str = "things"
    fmri_dir: str = "???"  # folder with sub-0X_ResponseData.h5 and the two metadata CSVs
    images_dir: str = "???"  # folder holding object_images/
    subjects: list[str] = field(default_factory=lambda: ["sub-01", "sub-02", "sub-03"])
    rois: dict[str, list[str]] = field(default_factory=_study_rois)  # ROI -> union of columns
    selection: str = "exemplar01"  # exemplar01 | concept_mean | test100
    zscore: str = "all"  # none | all | session
    min_reliability: float | None = None  # keep voxels with nc_testset >= this (percent)
    on_empty_roi: str = "fail"  # fail | skip (warn and drop the ROI for all subjects)
    on_nonfinite: str = "drop"  # drop (voxels with NaN/inf betas, counted in the log) | fail
    cache_dir: str | None = None  # brain-RDM cache; None = next to the data (or ~/.cache)
    resolution: int = 224  # evaluation images: shorter edge resized to this, then centre-cropped
    interpolation: str = "bilinear"


@dataclass
class SyntheticBrainConfig(ThingsBrainConfig):
    """Synthetic fMRI written in the THINGS-fMRI format (generated once into ``cache_dir``)."""

    name: str = "synthetic"
    fmri_dir: str = ""  # set by the generator
    images_dir: str = ""
    cache_dir: str | None = "~/.cache/snnrsa"
    seed: int = 0
    n_concepts: int = 96
    n_sessions: int = 4
    runs_per_session: int = 4
    n_test: int = 12
    image_size: int = 64
    resolution: int = 32


@dataclass
class RSAConfig:
    layers: list[str] = field(default_factory=lambda: ["conv1", "conv2", "conv3", "fc1"])
    layer_pooling: str = "gap"  # gap (global average pool of conv maps, the study) | none
    pairs: str = "all"  # all | cross_run (pairs shown in different runs for every subject)
    eval_batch_size: int = 64


@dataclass
class DynamicsConfig:
    """Sub-epoch probes (``experiment=stdp_dynamics``): every ``interval`` training images, score
    the layers against the ROIs (dynamics_rsa.csv) and store the rule's snapshot arrays
    (``rule.dynamics()``) under ``/dynamics`` in results.h5. 0 switches probes off."""

    interval: int = 0


@dataclass
class Config:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    neuron: NeuronConfig = field(default_factory=NeuronConfig)
    encoding: EncodingConfig = field(default_factory=EncodingConfig)
    readout: ReadoutConfig = field(default_factory=ReadoutConfig)
    rule: Any = None  # schema chosen by rule.name: the ``schema`` of the rule class
    data: Any = None  # schema chosen by data.name (DATA_SCHEMAS)
    brain: Any = None  # schema chosen by brain.name (BRAIN_SCHEMAS)
    rsa: RSAConfig = field(default_factory=RSAConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    checkpoints: list[int] = field(default_factory=lambda: [0, 1, 2, 5, 10, 20, 30, 40])
    bn_eval_mode: str = "eval"  # eval (correct) | train (the study's PC/STDP defect)
    progress: bool = True
    resume: bool = True  # continue a run directory's last checkpoint, skip a completed run
    evaluate_from: str | None = None  # score this run directory's checkpoints, no training
    keep_freed_memory: bool = True  # glibc keeps freed memory for reuse (snnrsa/runtime.py)


DATA_SCHEMAS: dict[str, type] = {
    "synthetic": SyntheticDataConfig,
    "imagefolder": ImageFolderDataConfig,
    "cifar10": Cifar10DataConfig,
}
BRAIN_SCHEMAS: dict[str, type] = {
    "synthetic": SyntheticBrainConfig,
    "things": ThingsBrainConfig,
    "rdm_file": RDMFileBrainConfig,
}
SPIKING_NEURONS = ("snntorch_lif", "norse_lif")
CHOICES: dict[str, tuple[str, ...]] = {
    "neuron.name": ("rate", *SPIKING_NEURONS),
    "neuron.reset": ("zero", "subtract"),
    "neuron.surrogate": ("atan", "fast_sigmoid"),
    "neuron.impl": ("fast", "library"),
    "encoding.name": ("analog", "poisson", "latency"),
    "readout.name": ("rate", "membrane", "spike_count", "probe"),
    "backbone.init": ("default", "kaiming_normal"),
    "rsa.layer_pooling": ("gap", "none"),
    "rsa.pairs": ("all", "cross_run"),
    "bn_eval_mode": ("eval", "train"),
    "brain.interpolation": ("bilinear", "bicubic", "lanczos", "nearest", "box"),
}
RDM_FILE_BRAIN_CHOICES: dict[str, tuple[str, ...]] = {
    "brain.axis_order": ("subject,image,image", "image,image,subject", "image,image",
                         "subject,pair", "pair,subject"),
    "brain.sessions": ("mean", "separate"),
}
STRUCT_AXIS_ROLES = ("subject", "session", "none")
THINGS_BRAIN_CHOICES: dict[str, tuple[str, ...]] = {
    "brain.selection": ("exemplar01", "concept_mean", "test100"),
    "brain.zscore": ("none", "all", "session"),
    "brain.on_empty_roi": ("fail", "skip"),
    "brain.on_nonfinite": ("drop", "fail"),
}


def _typed_group(group: str, node: Any, schemas: dict[str, type]) -> Any:
    name = node.get("name") if isinstance(node, DictConfig) else None
    if name not in schemas:
        raise ConfigError(f"{group}.name={name!r} is not one of {sorted(schemas)}")
    return _merge(group, schemas[name], node)


def _merge(group: str, schema: type, node: Any) -> Any:
    """The typed object for ``node``; unknown keys, wrong types and unset ``???`` values fail."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
        missing = sorted(OmegaConf.missing_keys(merged))
        if missing:
            keys = [k if group == "<root>" else f"{group}.{k}" for k in missing]
            raise ConfigError(f"{', '.join(keys)} not set: give them on the command line, e.g. "
                              f"{keys[0]}=/path/to/data (see README, 'Your own data')")
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ConfigError(f"invalid config in group '{group}': {err}") from None


def resolve(cfg: DictConfig) -> Config:
    """Merge a composed Hydra config into the schemas, validate it and return typed objects."""
    try:
        cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    except OmegaConfBaseException as err:
        raise ConfigError(f"cannot resolve config: {err}") from None
    cfg.pop("hydra", None)
    top = {k: v for k, v in cfg.items() if k not in ("rule", "data", "brain")}
    obj: Config = _merge("<root>", Config, top)
    from snnrsa.rules import RULES  # rule schemas live beside the rules (no import cycle here)

    rule_schemas = {name: rule.schema for name, rule in RULES.items()}
    obj.rule = _typed_group("rule", cfg.get("rule"), rule_schemas)
    obj.data = _typed_group("data", cfg.get("data"), DATA_SCHEMAS)
    obj.brain = _typed_group("brain", cfg.get("brain"), BRAIN_SCHEMAS)
    validate(obj)
    RULES[obj.rule.name].check(obj)
    return obj


def _get(cfg: Config, dotted: str) -> Any:
    value: Any = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def layer_names(cfg: Config) -> list[str]:
    """Read-out layer names the backbone offers: conv1..convN, fc1..fcM."""
    convs = [f"conv{i + 1}" for i in range(len(cfg.backbone.channels))]
    return convs + [f"fc{i + 1}" for i in range(len(cfg.backbone.fc_units))]


def validate(cfg: Config) -> None:
    """Reject impossible values and combinations before any work, naming the offending keys."""
    choices = dict(CHOICES)
    if cfg.brain.name in ("synthetic", "things"):
        choices.update(THINGS_BRAIN_CHOICES)
    if cfg.brain.name == "rdm_file":
        choices.update(RDM_FILE_BRAIN_CHOICES)
        axes = cfg.brain.struct_axes
        bad = [a for a in axes if a not in STRUCT_AXIS_ROLES]
        twice = [r for r in ("subject", "session") if axes.count(r) > 1]
        if bad or twice:
            raise ConfigError(f"brain.struct_axes={axes}: each axis is one of "
                              f"{list(STRUCT_AXIS_ROLES)}, subject and session at most once")
    if cfg.data.name != "synthetic":
        choices["data.subset"] = ("fixed", "per_seed")
    for key, allowed in choices.items():
        value = _get(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {list(allowed)}")
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
    cps = cfg.checkpoints
    if not cps or any(e < 0 for e in cps) or sorted(set(cps)) != list(cps):
        raise ConfigError(f"checkpoints={cps} must be a non-empty increasing list of epochs >= 0")
    offered = layer_names(cfg)
    unknown = [layer for layer in cfg.rsa.layers if layer not in offered]
    if unknown or not cfg.rsa.layers:
        raise ConfigError(f"rsa.layers={cfg.rsa.layers}: unknown {unknown}; offered {offered}")
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
    if cfg.rsa.pairs == "cross_run" and cfg.brain.name == "rdm_file":
        raise ConfigError("rsa.pairs=cross_run with brain=rdm_file: precomputed RDMs carry no "
                          "session/run labels; use rsa.pairs=all")
    if cfg.dynamics.interval < 0:
        raise ConfigError(f"dynamics.interval={cfg.dynamics.interval} must be >= 0 (0 = off)")
    if not cfg.brain.rois:
        raise ConfigError("brain.rois is empty: name at least one ROI")
    if cfg.device != "auto" and not (cfg.device == "cpu" or cfg.device.startswith("cuda")):
        raise ConfigError(f"device={cfg.device!r} must be auto, cpu, cuda or cuda:N")

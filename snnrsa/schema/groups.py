"""Schemas of the model, data, brain and run groups (rules: ``schema/rules.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from snnrsa.schema._field import choice

SPIKING_NEURONS = ("snntorch_lif", "norse_lif")
STRUCT_AXIS_ROLES = ("subject", "session", "none")
INTERPOLATIONS = ("bilinear", "bicubic", "lanczos", "nearest", "box")  # data.images.INTERPOLATION


@dataclass
class BackboneConfig:
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    kernel_size: int = 3
    # per conv block (a block without an entry uses the last one); empty: kernel_size everywhere
    kernel_sizes: list[int] = field(default_factory=list)
    # conv zero padding per block; empty: kernel // 2 ("same" for odd kernels)
    padding: list[int] = field(default_factory=list)
    pool_padding: int = 0  # padding of every 2x2 stride-2 max-pool (SpykeTorch's recipe: 1)
    batch_norm: bool = True
    fc_units: list[int] = field(default_factory=lambda: [512])
    dropout: float = 0.0
    pool_to: int = 4  # Conv-map side before FC1; larger maps are adaptive-average-pooled to it
    # default (PyTorch kaiming_uniform a=sqrt(5)) | study_fa / study_stdp (kaiming_normal on conv
    # weights only, FC layers at PyTorch's default, drawn in the order of the study's FA_CNN /
    # STDP_CNN) | kaiming_normal (every conv and linear layer, biases zero)
    init: str = choice("default", "default", "study_fa", "study_stdp", "kaiming_normal")
    in_channels: int = 3
    # BPTT memory bound: 0 = off (full BPTT, every activation kept for backward); k > 0 = each
    # conv block keeps only its input and runs / recomputes conv, BN, neuron and pool k time steps
    # at a time (gradients equal to full BPTT; costs recomputation, tools/bench_memory.py)
    time_checkpoint: int = 0


@dataclass
class NeuronConfig:
    name: str = choice("rate", "rate", *SPIKING_NEURONS)
    time_steps: int = 1
    beta: float = 0.9  # membrane decay per step; norse gets tau_mem_inv = (1 - beta) / dt
    threshold: float = 1.0
    reset: str = choice("zero", "zero", "subtract")
    surrogate: str = choice("fast_sigmoid", "atan", "fast_sigmoid")
    surrogate_slope: float = 1.0
    # fast (one fused autograd op over time) | library (the idiomatic loop)
    impl: str = choice("fast", "fast", "library")
    # threshold-dependent BatchNorm (tdBN, Zheng et al. 2021) for spiking neurons: the BatchNorm
    # before a LIF neuron starts at weight bn_alpha * threshold, i.e. normalises its current to
    # alpha * V_th, and spiking FC layers get a BatchNorm too; None = plain BatchNorm init
    # (weight 1 whatever the threshold) and no FC BatchNorm, the study-faithful network
    bn_alpha: float | None = None
    # spiking networks with BatchNorm: before the first checkpoint, set every BatchNorm's running
    # statistics from this many training images (train-mode forward, no gradient, weights and
    # random streams untouched); without it an untrained network is evaluated with identity
    # statistics, and sparse input (latency) leaves deeper layers below threshold; 0 = off
    bn_calibration: int = 512


@dataclass
class EncodingConfig:
    name: str = choice("analog", "analog", "poisson", "latency")
    gain: float = 1.0  # analog: input current = gain * normalised image
    p_max: float = 1.0  # poisson: spike probability per step at intensity 1
    threshold: float = 0.05  # latency: pixels at or below this intensity never spike


@dataclass
class ReadoutConfig:
    # linear_probe = rate head + linear probes of frozen layers
    name: str = choice("rate", "rate", "membrane", "spike_count", "linear_probe")
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
    # fixed (same subset for every seed, from data_seed) | per_seed
    subset: str = choice("fixed", "fixed", "per_seed")
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
    axis_order: str = choice("subject,image,image", "subject,image,image", "image,image,subject",
                             "image,image", "subject,pair", "pair,subject")
    # MATLAB struct arrays: role of each axis (or of each axis longer than 1), MATLAB order:
    # subject | session | none (STRUCT_AXIS_ROLES); [] = the one axis longer than 1 is the subject
    struct_axes: list[str] = field(default_factory=list)
    # mean (average each subject's sessions) | separate (also keep them)
    sessions: str = choice("mean", "mean", "separate")
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
    interpolation: str = choice("bilinear", *INTERPOLATIONS)  # resize filter
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
    selection: str = choice("exemplar01", "exemplar01", "concept_mean", "test100")
    zscore: str = choice("all", "none", "all", "session")
    min_reliability: float | None = None  # keep voxels with nc_testset >= this (percent)
    # fail | skip (warn and drop the ROI for all subjects)
    on_empty_roi: str = choice("fail", "fail", "skip")
    # drop (voxels with NaN/inf betas, counted in the log) | fail
    on_nonfinite: str = choice("drop", "drop", "fail")
    cache_dir: str | None = None  # brain-RDM cache; None = next to the data (or ~/.cache)
    resolution: int = 224  # evaluation images: shorter edge resized to this, then centre-cropped
    interpolation: str = choice("bilinear", *INTERPOLATIONS)


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
    fmri_runs_per_session: int = 4
    n_test: int = 12
    image_size: int = 64
    resolution: int = 32


@dataclass
class RSAConfig:
    layers: list[str] = field(default_factory=lambda: ["conv1", "conv2", "conv3", "fc1"])
    # gap (global average pool of conv maps, the study) | none (every unit, position kept) |
    # grid (each map average-pooled to pool_grid x pool_grid: position kept coarsely)
    layer_pooling: str = choice("gap", "gap", "none", "grid")
    pool_grid: int = 4
    # all | cross_fmri_run (pairs shown in different fMRI runs for every subject)
    pairs: str = choice("all", "all", "cross_fmri_run")
    eval_batch_size: int = 64


@dataclass
class DynamicsConfig:
    """Sub-epoch snapshots (``experiment=stdp_dynamics``): every ``interval`` training images,
    score the layers against the ROIs (dynamics_rsa.csv) and store the rule's snapshot arrays
    (``rule.dynamics()``) under ``/dynamics`` in results.h5. 0 switches them off."""

    interval: int = 0


@dataclass
class Config:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    neuron: NeuronConfig = field(default_factory=NeuronConfig)
    encoding: EncodingConfig = field(default_factory=EncodingConfig)
    readout: ReadoutConfig = field(default_factory=ReadoutConfig)
    rule: Any = None  # schema chosen by rule.name (RULE_SCHEMAS)
    data: Any = None  # schema chosen by data.name (DATA_SCHEMAS)
    brain: Any = None  # schema chosen by brain.name (BRAIN_SCHEMAS)
    rsa: RSAConfig = field(default_factory=RSAConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    checkpoints: list[int] = field(default_factory=lambda: [0, 1, 2, 5, 10, 20, 30, 40])
    # eval (correct) | train (the study's PC/STDP defect)
    bn_eval_mode: str = choice("eval", "eval", "train")
    progress: bool = True
    resume: bool = True  # continue a run directory's last checkpoint, skip a completed run
    evaluate_from: str | None = None  # score this run directory's checkpoints, no training
    # held-out accuracy every k epochs and always at checkpoint epochs; 0 = at checkpoints only
    # (train.csv shows NaN between): the test pass of a costly rule (PC's inference) costs a lot
    test_every: int = 1
    # held-out images scored for accuracy: a fixed random subset of this size drawn from
    # data.data_seed (the same images every epoch, seed and rule); None = the whole test set
    test_images: int | None = None
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


def layer_names(cfg: Config) -> list[str]:
    """Read-out layer names the backbone offers: conv1..convN, fc1..fcM."""
    convs = [f"conv{i + 1}" for i in range(len(cfg.backbone.channels))]
    return convs + [f"fc{i + 1}" for i in range(len(cfg.backbone.fc_units))]

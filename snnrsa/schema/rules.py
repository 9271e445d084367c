"""Schemas of the ``rule`` group, one per rule (``rule.name`` picks it). Rules with an optimiser
share ``OptimConfig``: one set of keys, one implementation (``snnrsa/rules/optim.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from snnrsa.schema._field import choice


@dataclass
class RuleConfig:
    name: str = "???"


@dataclass
class OptimConfig(RuleConfig):
    """The optimiser node of every rule trained by gradient steps (bp, fa, pc)."""

    # adam (coupled L2, the study) | adamw (decoupled decay, Loshchilov & Hutter 2019) | sgd
    optimizer: str = choice("adam", "adam", "adamw", "sgd")
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd only
    # cosine (stepped per epoch over the last checkpoint) | constant
    schedule: str = choice("cosine", "cosine", "constant")
    grad_clip: float = 1.0  # max gradient norm; 0 disables


@dataclass
class BPConfig(OptimConfig):
    name: str = "bp"


@dataclass
class UntrainedConfig(RuleConfig):
    name: str = "untrained"


@dataclass
class FAConfig(OptimConfig):
    name: str = "fa"
    # conv (the study: FC layers and head use true backprop) | all
    layers: str = choice("conv", "conv", "all")
    # fa | sign_symmetric | random_magnitude_sign_of_w | direct (DFA, Nøkland 2016: the output
    # error to every chosen block through its own fixed random matrix)
    feedback: str = choice("fa", "fa", "sign_symmetric", "random_magnitude_sign_of_w", "direct")
    # xavier_normal (the study) | xavier_uniform | kaiming_normal | backbone (the B that
    # backbone.init=study_fa drew in the study's FA_CNN order)
    feedback_init: str = choice("xavier_normal", "xavier_normal", "xavier_uniform",
                                "kaiming_normal", "backbone")
    feedback_seed: int = 0  # conf/rule/fa.yaml sets ${seed}; B draws from its own stream of it
    optimizer: str = choice("sgd", "adam", "adamw", "sgd")
    lr: float = 5e-4


@dataclass
class PCConfig(OptimConfig):
    """Optimiser keys apply to -dF/dW."""

    name: str = "pc"
    # energy (canonical PC) | fixed_prediction (fixed-prediction assumption, Millidge et al. 2020:
    # BP's gradients exactly at inference_rate 1 with one step per hidden stage)
    pc: str = choice("energy", "energy", "fixed_prediction")
    inference_steps: int = 8
    inference_rate: float = 0.1
    # ce (cross-entropy of the label) | mse (one-hot output clamped)
    output_energy: str = choice("ce", "ce", "mse")
    # adamw: decoupled decay, so PC's tiny lower-layer updates are not out-regularised (README)
    optimizer: str = choice("adamw", "adam", "adamw", "sgd")


@dataclass
class PCPublishedConfig(RuleConfig):
    name: str = "pc_published"
    inference_steps: int = 10
    inference_rate: float = 0.02
    lr: float = 1e-4  # rate of the W_1..W_{N-1} update
    error_clamp: float = 0.5  # |r - r_bottom_up| is clamped to this before averaging
    update_clamp: float = 0.01  # each entry of the outer product is clamped to this
    fc_lr: float = 1e-3  # Adam on FC layers and head


@dataclass
class STDPPublishedConfig(RuleConfig):
    name: str = "stdp_published"
    # as_coded (depresses causal pairs) | as_printed
    sign: str = choice("as_coded", "as_coded", "as_printed")
    a_plus: float = 0.003
    a_minus: float = 0.003
    tau_plus: float = 20.0  # in steps
    tau_minus: float = 20.0
    steps: int = 10  # Poisson steps per update
    clip: float = 0.002  # |dW| bound before the learning rate
    stdp_lr: float = 5e-4
    w_max: float = 1.0  # conv weights are clamped to [-w_max, w_max]
    lr: float = 1e-3  # Adam on FC layers, head and BN affine parameters
    relu_before_bn: bool = True  # the study's STDP blocks: conv -> ReLU -> BN -> ReLU -> pool


@dataclass
class STDPConfig(RuleConfig):
    """Canonical conv STDP; the defaults are Kheradpisheh et al. (2018) as SpykeTorch reimplements
    it (``KheradpishehDeep.py``); see conf/rule/stdp.yaml for each value's source."""

    name: str = "stdp"
    # rank_order (the recipe: grey image -> two DoG kernels, values < dog_threshold dropped, local
    # normalisation, equal-count rank-order bins over time_steps) | encoding (the configured
    # encoding group after the DoG on/off maps or the pixels, over neuron.time_steps)
    coding: str = choice("rank_order", "rank_order", "encoding")
    time_steps: int = 15  # rank_order only: spike bins per image
    dog_threshold: float = 50.0  # rank_order: DoG responses below this (on a 0-255 image) are dropped
    dog_padding: str = choice("zero", "zero", "replicate")  # rank_order: padding of the DoG convs
    normalization_radius: int = 8  # rank_order: local normalisation window (2r+1)^2; 0: off
    # Firing threshold per conv layer (a layer without an entry uses the last one): a potential
    # (threshold_unit=potential, the recipe's 10 and 1) or a fraction of the fan-in C_in*k*k
    thresholds: list[float] = field(default_factory=lambda: [10.0, 1.0, 1.0])
    threshold_unit: str = choice("potential", "potential", "fan_in")
    # fixed: ``thresholds`` as given (the recipe) | adaptive: the first batch a layer sees (again
    # when its training starts) sets its threshold to a quantile of its units' peak potentials
    threshold_mode: str = choice("fixed", "fixed", "adaptive")
    threshold_quantiles: list[float] = field(default_factory=lambda: [0.3, 0.3, 0.1])
    beta: float = 1.0  # membrane decay per step: 1 is integrate-and-fire (the recipe), < 1 leaky
    one_spike: bool = True  # at most one spike per neuron per image (time-to-first-spike code)
    # per position only the earliest feature fires: learning (the recipe: on the output of the
    # layer in training and on its pooled input, never at evaluation) | always | off
    pointwise_inhibition: str = choice("learning", "learning", "always", "off")
    k_winners: list[int] = field(default_factory=lambda: [5, 8, 8])  # per layer, per image
    inhibition_radius: list[int] = field(default_factory=lambda: [2, 1, 1])  # k-WTA, in pixels
    a_plus: float = 0.004
    a_minus: float = 0.003
    a_plus_max: float = 0.15  # the ramp stops here; a_minus keeps its ratio to a_plus
    ramp_every: int = 500  # training images of a layer between learning-rate doublings
    ramp_factor: float = 2.0
    ramp_layers: list[int] = field(default_factory=lambda: [0])  # layers with the ramp (recipe: conv1)
    # logit: Δw = a·w(1-w) per event integrated exactly (logit(w) += Σ ±a), so a batch's summed
    # events equal applying them one by one (batch-size invariant) | linear: w += w(1-w)·Σ ±a at
    # the batch's weights (the recipe per image; steps grow with the batch)
    batch_update: str = choice("logit", "logit", "linear")
    # greedy schedule: training images per layer (the recipe: 120,000 for conv1 (2 MNIST epochs),
    # 1,200,000 for conv2 (20 epochs)); a budget beyond the run's epochs leaves the layer training
    layer_images: list[int] = field(default_factory=lambda: [120000, 1200000, 1200000])
    convergence_stop: float = 0.0  # move to the next layer once C = mean(w(1-w)) < this; 0: off
    init_mean: float = 0.8
    init_std: float = 0.05
    dog: bool = True  # coding=encoding: on/off DoG front end (conv1 then has 2 input channels)
    dog_sigmas: list[float] = field(default_factory=lambda: [1.0, 2.0])  # centre, surround
    dog_size: int = 7
    # DoG front end's fixed input size in pixels (conf: the training images' data.image_size):
    # evaluation images at another resolution are resampled to it; None: images as given
    input_size: int | None = None
    # Homeostatic per-feature thresholds (Diehl & Cook 2015, adapted to k-WTA), not in the recipe:
    # 0 is off. Each feature c of the layer in training has an offset o_c, threshold_c =
    # threshold * (1 + o_c), applied as the gain 1 / (1 + o_c) on its drive; per batch of n images
    # o_c += (n / homeostasis_tau) * (C * wins_c / wins - 1), clamped to [-homeostasis_max,
    # homeostasis_max]: a time constant in images, whatever the batch size. Frozen once the
    # layer's training ends.
    homeostasis_tau: float = 0.0
    homeostasis_max: float = 0.5
    # conv read-out for RSA: potential (membrane potential at the end of the presentation, before
    # threshold and pool: defined where a layer fires everywhere or nowhere, e.g. conv2/conv3 at
    # their initial weights, where every unit with 2 input spikes fires at once and a spike
    # read-out is constant, i.e. NaN rho) | count (time-averaged spikes of the block output:
    # fired or not) | latency ((T - t)/T of each unit's first spike, 0 when silent)
    feature_code: str = choice("potential", "potential", "count", "latency")


@dataclass
class STDPTraceConfig(RuleConfig):
    name: str = "stdp_trace"
    threshold_mode: str = choice("adaptive", "fixed", "adaptive")
    thresholds: list[float] = field(default_factory=lambda: [0.2, 0.2, 0.2])  # x fan-in (fixed)
    threshold_quantiles: list[float] = field(default_factory=lambda: [0.7, 0.4, 0.2])
    beta: float = 0.9  # LIF membrane decay per step
    competition: str = choice("pointwise", "none", "pointwise")
    # per output kernel, to its initial value
    normalise: str = choice("mean", "none", "mean", "l2")
    # norse's weight dependence
    algorithm: str = choice("multiplicative_pow", "additive", "additive_step",
                            "multiplicative_pow", "multiplicative_relu")
    mu: float = 1.0  # weight-dependence exponent of multiplicative_pow
    eta_plus: float = 1.0  # per pre/post pair (updates are divided by batch x output positions)
    eta_minus: float = 1.0
    a_pre: float = 1.0  # > a_post: coincident pre/post spikes potentiate (equal: they cancel)
    a_post: float = 0.5
    tau_pre_inv: float = 0.2  # inverse trace time constants, per step (dt = 1)
    tau_post_inv: float = 0.2
    w_min: float = 0.0
    w_max: float = 1.0
    layer_images: list[int] = field(default_factory=lambda: [4000, 4000, 4000])
    init_mean: float = 0.5
    init_std: float = 0.05
    dog: bool = True
    dog_sigmas: list[float] = field(default_factory=lambda: [1.0, 2.0])
    dog_size: int = 7
    input_size: int | None = None  # as STDPConfig.input_size


RULE_SCHEMAS: dict[str, type[RuleConfig]] = {
    "bp": BPConfig, "untrained": UntrainedConfig, "fa": FAConfig, "pc": PCConfig,
    "pc_published": PCPublishedConfig, "stdp": STDPConfig, "stdp_trace": STDPTraceConfig,
    "stdp_published": STDPPublishedConfig,
}

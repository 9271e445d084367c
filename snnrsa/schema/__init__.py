"""The config schemas: one dataclass per config group, allowed values beside each field.

This package is the leaf of snnrsa: it imports nothing else of it, so every module may import
it. ``snnrsa.config.resolve`` (the composition root) merges a Hydra config into these schemas and
runs ``validate`` and the rule's ``check`` before any data is touched.
"""

from snnrsa.schema._field import RENAMED_KEYS, ConfigError, allowed_values, choice
from snnrsa.schema.checks import check_choices, validate
from snnrsa.schema.groups import (
    BRAIN_SCHEMAS,
    CIFAR_MEAN,
    CIFAR_STD,
    DATA_SCHEMAS,
    SPIKING_NEURONS,
    BackboneConfig,
    Cifar10DataConfig,
    Config,
    DynamicsConfig,
    EncodingConfig,
    ImageFolderDataConfig,
    ImageSetDataConfig,
    NeuronConfig,
    RDMFileBrainConfig,
    ReadoutConfig,
    RSAConfig,
    SyntheticBrainConfig,
    SyntheticDataConfig,
    ThingsBrainConfig,
    layer_names,
)
from snnrsa.schema.rules import (
    RULE_SCHEMAS,
    BPConfig,
    FAConfig,
    OptimConfig,
    PCConfig,
    PCPublishedConfig,
    RuleConfig,
    STDPConfig,
    STDPPublishedConfig,
    STDPTraceConfig,
    UntrainedConfig,
)

__all__ = [
    "BRAIN_SCHEMAS", "CIFAR_MEAN", "CIFAR_STD", "DATA_SCHEMAS", "RENAMED_KEYS", "RULE_SCHEMAS",
    "SPIKING_NEURONS",
    "BPConfig", "BackboneConfig", "Cifar10DataConfig", "Config", "ConfigError", "DynamicsConfig",
    "EncodingConfig", "FAConfig", "ImageFolderDataConfig", "ImageSetDataConfig", "NeuronConfig",
    "OptimConfig", "PCConfig", "PCPublishedConfig", "RDMFileBrainConfig", "RSAConfig",
    "ReadoutConfig", "RuleConfig", "STDPConfig", "STDPPublishedConfig", "STDPTraceConfig",
    "SyntheticBrainConfig", "SyntheticDataConfig", "ThingsBrainConfig", "UntrainedConfig",
    "allowed_values", "check_choices", "choice", "layer_names", "validate",
]

"""The composition root: a composed Hydra config in, a typed and fully checked ``Config`` out.

Hydra composes plain YAML; ``resolve`` merges each group into its dataclass (``snnrsa.schema``)
so that a misspelt key or a value of the wrong type fails naming the key (and the keys the group
has), then checks every field's allowed values and the whole-config combinations
(``schema.validate``) and the rule's own ``check`` — all before any data is touched. Groups whose
keys differ by choice (rule, data, brain) pick their schema by ``name``.

The schema names are re-exported here because callers (tools, tests) import them from here.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from snnrsa.rules.registry import RULES
from snnrsa.schema import *  # noqa: F403  (the schema names, for ``from snnrsa.config import X``)
from snnrsa.schema import (
    BRAIN_SCHEMAS,
    DATA_SCHEMAS,
    RENAMED_KEYS,
    RULE_SCHEMAS,
    Config,
    ConfigError,
    validate,
)
from snnrsa.schema import __all__ as _schema_names


def _typed_group(group: str, node: Any, schemas: dict[str, type]) -> Any:
    name = node.get("name") if isinstance(node, DictConfig) else None
    if name not in schemas:
        raise ConfigError(f"{group}.name={name!r} is not one of {sorted(schemas)}")
    return _merge(group, schemas[name], node)


def _unknown_key(group: str, schema: type, err: ConfigKeyError) -> ConfigError:
    """Name the unknown key and the keys the group has."""
    key = str(getattr(err, "key", "") or "")
    full = key if group == "<root>" else f"{group}.{key}"
    if full in RENAMED_KEYS:
        return ConfigError(f"{full} was renamed: use {RENAMED_KEYS[full]}")
    keys = sorted(schema.__dataclass_fields__)
    return ConfigError(f"invalid config in group '{group}': unknown key {full!r}; "
                       f"{schema.__name__} has {keys}")


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
    except ConfigKeyError as err:
        raise _unknown_key(group, schema, err) from None
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
    obj.rule = _typed_group("rule", cfg.get("rule"), RULE_SCHEMAS)
    obj.data = _typed_group("data", cfg.get("data"), DATA_SCHEMAS)
    obj.brain = _typed_group("brain", cfg.get("brain"), BRAIN_SCHEMAS)
    validate(obj)
    RULES[obj.rule.name].check(obj)
    return obj


__all__ = ["resolve", *_schema_names]

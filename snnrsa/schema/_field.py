"""The two building blocks of every schema: the error type and a field with its allowed values."""

from __future__ import annotations

from dataclasses import field
from typing import Any


class ConfigError(ValueError):
    """A config value or combination that cannot work; the message names the keys."""


# Old user-facing names -> their successors (issue 14: a name says one thing). An old value of a
# ``choice`` field, or an old key, fails naming the new one; ``conf/readout/probe.yaml`` stays only
# so that ``readout=probe`` composes and reaches this message.
RENAMED_VALUES: dict[tuple[str, str], tuple[str, str]] = {  # (key, old value) -> (old, new)
    ("readout.name", "probe"): ("readout=probe", "readout=linear_probe"),
    ("rsa.pairs", "cross_run"): ("rsa.pairs=cross_run", "rsa.pairs=cross_fmri_run"),
}
RENAMED_KEYS: dict[str, str] = {"brain.runs_per_session": "brain.fmri_runs_per_session"}


def choice(default: str, *allowed: str) -> Any:
    """A string field that must take one of ``allowed`` (the default first); the composition root
    checks every such field before any work, so allowed values are written down once, here."""
    if default not in allowed:
        raise ValueError(f"default {default!r} is not among {allowed}")
    return field(default=default, metadata={"choices": allowed})


def allowed_values(cls: type, name: str) -> tuple[str, ...]:
    """The allowed values of field ``name`` of dataclass ``cls`` (for code that branches on it)."""
    return cls.__dataclass_fields__[name].metadata["choices"]

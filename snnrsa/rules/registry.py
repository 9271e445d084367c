"""Rule name -> rule class; ``snnrsa.schema.RULE_SCHEMAS`` holds the matching config schemas."""

from __future__ import annotations

from typing import Any

from snnrsa.model.network import Network
from snnrsa.rules.base import Rule
from snnrsa.rules.bp import BP
from snnrsa.rules.fa import FA
from snnrsa.rules.pc import PC
from snnrsa.rules.pc_published import PCPublished
from snnrsa.rules.stdp import STDP
from snnrsa.rules.stdp_published import STDPPublished
from snnrsa.rules.stdp_trace import STDPTrace
from snnrsa.rules.untrained import Untrained
from snnrsa.schema import RULE_SCHEMAS

RULES: dict[str, type[Rule]] = {"bp": BP, "untrained": Untrained, "stdp": STDP,
                                "stdp_published": STDPPublished, "stdp_trace": STDPTrace,
                                "fa": FA, "pc": PC, "pc_published": PCPublished}
assert set(RULES) == set(RULE_SCHEMAS), "every rule needs a schema in snnrsa/schema/rules.py"


def make_rule(cfg: Any, net: Network, n_epochs: int) -> Rule:
    """Build the rule named by ``cfg.name`` for ``net``, scheduled over ``n_epochs`` epochs."""
    if cfg.name not in RULES:
        raise ValueError(f"rule.name={cfg.name!r} is not one of {sorted(RULES)}")
    return RULES[cfg.name](cfg, net, n_epochs)

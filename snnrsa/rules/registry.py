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
from snnrsa.schema import RULE_SCHEMAS, Config

RULES: dict[str, type[Rule]] = {"bp": BP, "untrained": Untrained, "stdp": STDP,
                                "stdp_published": STDPPublished, "stdp_trace": STDPTrace,
                                "fa": FA, "pc": PC, "pc_published": PCPublished}
assert set(RULES) == set(RULE_SCHEMAS), "every rule needs a schema in snnrsa/schema/rules.py"


def build_network(cfg: Config, n_classes: int) -> Network:
    """The network ``cfg.rule`` trains: the shared backbone with the rule's own blocks."""
    if cfg.rule.name not in RULES:
        raise ValueError(f"rule.name={cfg.rule.name!r} is not one of {sorted(RULES)}")
    return Network(cfg, n_classes, RULES[cfg.rule.name].block_spec(cfg))


def make_rule(cfg: Any, net: Network, n_epochs: int) -> Rule:
    """Build the rule named by ``cfg.name`` for ``net`` (from ``build_network``), scheduled over
    ``n_epochs`` epochs."""
    if cfg.name not in RULES:
        raise ValueError(f"rule.name={cfg.name!r} is not one of {sorted(RULES)}")
    rule = RULES[cfg.name]
    own = cfg.name if rule.block_spec.__func__ is not Rule.block_spec.__func__ else None
    if net.rule_blocks != own:
        raise ValueError(f"rule={cfg.name} needs the network built for it (its blocks: "
                         f"{own or 'the shared backbone'}; this one's: "
                         f"{net.rule_blocks or 'the shared backbone'}): use "
                         "snnrsa.rules.build_network(cfg, n_classes)")
    return rule(cfg, net, n_epochs)

"""Learning rules. Each rule trains a ``Network`` batch by batch; the tracking code only calls
``train_batch`` / ``end_epoch`` and checkpoints ``state_dict``, so rules slot in side by side."""

from __future__ import annotations

from typing import Any

from snnrsa.network import Network
from snnrsa.rules.base import Rule
from snnrsa.rules.bp import BP
from snnrsa.rules.fa import FA
from snnrsa.rules.pc import PC
from snnrsa.rules.pc_published import PCPublished
from snnrsa.rules.stdp import STDP
from snnrsa.rules.stdp_published import STDPPublished
from snnrsa.rules.stdp_trace import STDPTrace
from snnrsa.rules.untrained import Untrained

RULES: dict[str, type[Rule]] = {"bp": BP, "untrained": Untrained, "stdp": STDP,
                              "stdp_published": STDPPublished, "stdp_trace": STDPTrace,
                              "fa": FA, "pc": PC, "pc_published": PCPublished}


def make_rule(cfg: Any, net: Network, n_epochs: int) -> Rule:
    """Build the rule named by ``cfg.name`` for ``net``, scheduled over ``n_epochs`` epochs."""
    if cfg.name not in RULES:
        raise ValueError(f"rule.name={cfg.name!r} is not one of {sorted(RULES)}")
    return RULES[cfg.name](cfg, net, n_epochs)


__all__ = ["RULES", "Rule", "make_rule"]

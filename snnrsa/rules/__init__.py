"""Learning rules. Each rule trains a ``Network`` batch by batch; the run loop only calls
``train_batch`` / ``end_epoch`` and checkpoints ``state_dict``, so rules slot in side by side.
A new rule: a schema in ``snnrsa/schema/rules.py``, a module here (its own conv blocks, if any,
as a ``block_spec``), an entry in ``registry.py`` and ``conf/rule/<name>.yaml``."""

from snnrsa.rules.base import Rule
from snnrsa.rules.registry import RULES, build_network, make_rule

__all__ = ["RULES", "Rule", "build_network", "make_rule"]

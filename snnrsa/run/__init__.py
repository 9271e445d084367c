"""Running one job: ``loop`` (setup, resume, train, evaluate, write), ``state`` (``RunState``,
what a checkpoint holds), ``evaluation`` (activations -> RDMs -> scores, accuracy, probes),
``report`` (the printed tables)."""

from snnrsa.run.loop import run
from snnrsa.run.report import summary_tables

__all__ = ["run", "summary_tables"]

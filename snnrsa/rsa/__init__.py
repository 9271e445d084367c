"""Representational similarity analysis: RDMs from activations and their comparison."""

from snnrsa.rsa.compare import spearman, upper_tri
from snnrsa.rsa.rdm import correlation_rdm

__all__ = ["correlation_rdm", "spearman", "upper_tri"]

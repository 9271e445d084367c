"""Neuron nonlinearities of the backbone: the rate neuron and the snntorch / norse LIF neurons.

``functional`` holds the LIF recurrences and their backward as functions of one
``LIFParameters``; ``fused`` runs a whole time loop as one autograd node over them (or over the
compiled CPU kernels of ``_cpu`` / ``_cpu_kernels``); ``modules`` wraps them as ``nn.Module``s.
"""

from snnrsa.neurons.functional import LIFParameters
from snnrsa.neurons.modules import (
    NEURON_IMPLS,
    NORSE_DT,
    NorseLIF,
    RateNeuron,
    SnntorchLIF,
    make_neuron,
    pooled_spikes,
)

__all__ = ["LIFParameters", "NEURON_IMPLS", "NORSE_DT", "NorseLIF", "RateNeuron", "SnntorchLIF",
           "make_neuron", "pooled_spikes"]

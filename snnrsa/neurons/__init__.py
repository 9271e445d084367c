"""Neuron nonlinearities of the backbone: the rate neuron and the snntorch / norse LIF neurons."""

from snnrsa.neurons.modules import (
    NEURON_IMPLS,
    NORSE_DT,
    NorseLIF,
    RateNeuron,
    SnntorchLIF,
    make_neuron,
    pooled_spikes,
)

__all__ = ["NEURON_IMPLS", "NORSE_DT", "NorseLIF", "RateNeuron", "SnntorchLIF", "make_neuron",
           "pooled_spikes"]

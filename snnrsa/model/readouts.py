"""Classification read-outs: how the head's currents over T steps become class scores."""

from __future__ import annotations

import torch
from torch import nn

from snnrsa.neurons import make_neuron
from snnrsa.schema import NeuronConfig, ReadoutConfig


class Readout(nn.Module):
    """rate (and linear_probe, whose class read-out is the linear probes on frozen layers): mean head
    current over time (= the linear map of the FC rates);
    membrane: final potential of a non-spiking leaky integrator (decay beta);
    spike_count: spikes of LIF output neurons summed over time."""

    def __init__(self, cfg: ReadoutConfig, neuron: NeuronConfig):
        super().__init__()
        self.name = cfg.name
        self.beta = neuron.beta if neuron.name != "rate" else 0.0
        self.neuron = make_neuron(neuron) if cfg.name == "spike_count" else None

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        if self.name in ("rate", "linear_probe"):
            return current.mean(0)
        if self.name == "membrane":
            mem = torch.zeros_like(current[0])
            for cur in current:
                mem = self.beta * mem + cur
            return mem
        return self.neuron(current).sum(0)

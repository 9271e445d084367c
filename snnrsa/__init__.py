"""snnrsa: learning rules, spiking/rate CNNs and representational similarity to visual cortex."""

__version__ = "0.1.0"

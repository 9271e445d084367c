"""Canonical convolutional STDP on spiking neurons (Kheradpisheh et al. 2018; Mozafari et al. 2019).

The rule's network is the shared backbone built with first-spike blocks (``STDP.block_spec``,
read by ``build_network``): an optional on/off difference-of-Gaussians front end before the
configured spike encoder, conv weights in [0, 1] with no BatchNorm, integrate-and-fire (or leaky)
neurons that fire at most once per image, optional pointwise lateral inhibition, and pools that
keep each pooled unit's earliest spike. ``net(x)`` and
``net.features`` then run exactly the network that learns, so RSA and checkpoints see it unchanged.

Learning is greedy layer-wise: per image, k-winner-take-all with lateral inhibition picks at most k
winning neurons (one per feature map); each winner's kernel gets the soft-bounded multiplicative
update Δw = +a⁺·w(1−w) where its input spiked no later than it did, −a⁻·w(1−w) elsewhere. A batch is
processed at once (no per-image loop): winners are found for all images in parallel and their
updates, computed at the same weights, are summed or averaged per feature.

Speed: for calibrated one-spike IF layers with pointwise inhibition (the default), the learning path
(``all_io``) never builds the ``[T, B, C, H, W]`` potentials: ``pointwise_first_spikes`` finds each
position's surviving first spike from the receptive fields' input spike times with about two matmul
passes (a backward search over time on the positions that fire), layers pass only ``[B, H, W, C]``
spike times, and the k-WTA runs on the ``[B, H*W]`` survivors. Other settings take the conv over all
T cumulative frames. Both give the same spikes (tests/test_stdp.py); tools/bench_stdp.py times the
batched rule against a per-image reference.
"""

from snnrsa.rules.stdp.rule import STDP, require_spike_input

__all__ = ["STDP", "require_spike_input"]

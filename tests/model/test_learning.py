"""BP learns the embedded procedural set well above chance (10 classes: 10 %), and spiking BP
learns like the rate network at equal architecture (issue 15)."""

from __future__ import annotations

import functools

import pytest
import torch

from snnrsa.data.training import batches, load_training_data
from snnrsa.rules import build_network, make_rule
from snnrsa.run.evaluation import accuracy, set_mode

from conftest import typed_cfg

CPU = torch.device("cpu")
EPOCHS = 3


def train_and_test(overrides: list[str], epochs: int) -> tuple[float, float]:
    """Held-out accuracy before and after ``epochs`` epochs of the configured rule."""
    cfg = typed_cfg(overrides)
    data = load_training_data(cfg.data)
    torch.manual_seed(0)
    net = build_network(cfg, len(data.classes))
    rule = make_rule(cfg.rule, net, epochs)
    set_mode(net, False)
    before = accuracy(rule, data, 256, CPU)[1]
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        set_mode(net, True)
        for x, y in batches(data.train_images, data.train_labels, 64, device=CPU, gen=gen,
                            drop_last=True):
            rule.train_batch(x, y)
        rule.end_epoch()
    set_mode(net, False)
    return before, accuracy(rule, data, 256, CPU)[1]


@functools.cache
def rate_accuracy() -> float:
    """Held-out accuracy of the rate network at equal architecture (trained once per session)."""
    return train_and_test(EQUAL, EPOCHS)[1]


EQUAL = ["backbone.channels=[16,32,64]", "backbone.fc_units=[128]", "data.n_train=2000",
         "data.n_test=500"]


@pytest.mark.slow
def test_bp_learns_above_chance() -> None:
    before, after = train_and_test(["data.n_train=2000", "data.n_test=500"], 4)
    print(f"held-out accuracy {before:.3f} -> {after:.3f}")
    assert before < 0.2
    assert 0.30 < after < 0.95


@pytest.mark.slow
@pytest.mark.parametrize("neuron", ["snntorch_lif", "norse_lif"])
def test_lif_bp_learns_like_the_rate_network(neuron: str) -> None:
    """Same small network, init seed, batches and epochs; the LIF network at the shipped neuron
    defaults (T = 4 instead of 8 to keep the test short) reaches >= 0.8x the rate network's
    held-out accuracy (measured 0.89x snntorch, 0.84x norse on one CPU, 0.94x and 0.92x on an
    AVX-512 one: float32 training differs across vector paths). Before tdBN (neuron.bn_alpha=null)
    it reached 0.62x (``tools/diagnose_spiking_bp.py --compare --epochs 3``)."""
    rate = rate_accuracy()
    before, lif = train_and_test([*EQUAL, f"neuron={neuron}", "neuron.time_steps=4"], EPOCHS)
    print(f"held-out accuracy: rate {rate:.3f}, {neuron} {before:.3f} -> {lif:.3f}")
    assert before < 0.2 and rate > 0.2
    assert lif >= 0.8 * rate

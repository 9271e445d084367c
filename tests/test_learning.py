"""BP learns the embedded procedural set well above chance (10 classes: 10 %), rate and LIF."""

from __future__ import annotations

import pytest
import torch

from snnrsa.data.training import batches, load_training_data
from snnrsa.network import Network
from snnrsa.rules import make_rule
from snnrsa.run.evaluation import accuracy, set_mode

from conftest import typed_cfg

CPU = torch.device("cpu")


def train_and_test(overrides: list[str], epochs: int) -> tuple[float, float]:
    """Held-out accuracy before and after ``epochs`` epochs of the configured rule."""
    cfg = typed_cfg(overrides)
    data = load_training_data(cfg.data)
    torch.manual_seed(0)
    net = Network(cfg, len(data.classes))
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


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "epochs", "floor"),
    [
        (["data.n_train=2000", "data.n_test=500"], 4, 0.30),
        (["neuron=snntorch_lif", "neuron.time_steps=4", "backbone.channels=[16,32,64]",
          "backbone.fc_units=[128]", "data.n_train=2000", "data.n_test=500"], 6, 0.2),
    ],
    ids=["rate", "snntorch_lif"],
)
def test_bp_learns_above_chance(overrides: list[str], epochs: int, floor: float) -> None:
    before, after = train_and_test(overrides, epochs)
    print(f"held-out accuracy {before:.3f} -> {after:.3f}")
    assert before < 0.2
    assert floor < after < 0.95

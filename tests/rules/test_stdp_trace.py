"""Pair-based trace STDP (norse stdp_step_conv2d): update direction, and the rule end to end."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from snnrsa.config import ConfigError
from snnrsa.rules import build_network, make_rule
from snnrsa.rules.stdp_trace import STDPTrace, TraceLIF, stdp_parameters, trace_stdp_layer

from conftest import typed_cfg

BASE = ["rule=stdp_trace", "neuron=snntorch_lif", "encoding=latency", "neuron.time_steps=6",
        "backbone.fc_units=[8]", "rsa.layers=[conv1]"]


def test_causal_pairs_potentiate_and_acausal_depress() -> None:
    """Three inputs onto one LIF neuron (1x1 conv): input 0 spikes at t=0, input 1 at t=1, the
    neuron crosses threshold at t=1 (0.5 + 0.5 >= 0.8) and resets, input 2 spikes at t=4 (0.5 < 0.8:
    no second spike). Pre-before-post grows, post-before-pre shrinks; the coincident pair cancels
    with symmetric parameters (a_pre = a_post)."""
    cfg = typed_cfg([*BASE, "rule.algorithm=additive", "rule.eta_plus=0.01",
                     "rule.eta_minus=0.01", "rule.a_post=1.0"]).rule
    z_pre = torch.zeros(6, 1, 3, 1, 1)
    z_pre[0, 0, 0] = z_pre[1, 0, 1] = z_pre[4, 0, 2] = 1.0
    conv = nn.Conv2d(3, 1, 1, bias=False).requires_grad_(False)
    with torch.no_grad():
        conv.weight.fill_(0.5)
    neuron = TraceLIF(0.8, 1.0, "none", None)
    z_post = trace_stdp_layer(z_pre, conv, neuron, stdp_parameters(cfg, 0))
    assert z_post[:, 0, 0, 0, 0].tolist() == [0, 1, 0, 0, 0, 0]
    dw = conv.weight.detach().flatten() - 0.5
    assert dw[0] > 1e-4, dw  # pre at 0, post at 1: potentiation
    assert dw[2] < -1e-4, dw  # post at 1, pre at 4: depression
    assert abs(float(dw[1])) < 1e-6, dw  # coincident: cancels
    # multiplicative weight dependence: the same pairs move a weight near w_max up less
    cfg2 = typed_cfg([*BASE, "rule.algorithm=multiplicative_pow", "rule.eta_plus=0.01",
                      "rule.eta_minus=0.01"]).rule
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([0.9, 0.5, 0.5]).view(1, 3, 1, 1))
    z_post = trace_stdp_layer(z_pre, conv, TraceLIF(1.2, 1.0, "none", None),
                              stdp_parameters(cfg2, 0))
    assert z_post[:, 0, 0, 0, 0].tolist() == [0, 1, 0, 0, 0, 0]
    assert 0 < float(conv.weight.flatten()[0]) - 0.9 < float(dw[0])


def test_defaults_potentiate_coincident_pairs_and_normalise_by_pairs() -> None:
    """At the shipped a_pre > a_post a coincident pre/post pair potentiates; the step is the
    same for one image as for a batch of four copies on a map four times as large (per pair)."""
    cfg = typed_cfg(BASE).rule
    assert cfg.a_pre > cfg.a_post

    def step(batch: int, side: int) -> torch.Tensor:
        z_pre = torch.zeros(3, batch, 1, side, side)
        z_pre[1] = 1.0  # every input spikes at t=1, the neuron at t=1 too (coincident)
        conv = nn.Conv2d(1, 1, 1, bias=False).requires_grad_(False)
        with torch.no_grad():
            conv.weight.fill_(0.5)
        z_post = trace_stdp_layer(z_pre, conv, TraceLIF(0.4, 1.0, "none", None),
                                  stdp_parameters(cfg, 0))
        assert z_post[:, :, 0].sum(0).eq(1).all() and z_post[1].eq(1).all()
        return conv.weight.detach().flatten() - 0.5

    one = step(1, 1)
    assert float(one) > 1e-4, one
    torch.testing.assert_close(step(4, 2), one, rtol=1e-5, atol=0)


def test_pointwise_competition_lets_one_feature_spike_per_position() -> None:
    neuron = TraceLIF(0.5, 1.0, "pointwise", None)
    current = torch.rand(4, 2, 5, 3, 3)
    z = neuron(current)
    assert z.sum(2).max() <= 1 and z.sum() > 0


def test_rule_trains_layerwise_keeps_bounds_and_norms() -> None:
    torch.set_num_threads(1)
    cfg = typed_cfg([*BASE, "backbone.channels=[4,6]", "rule.layer_images=[32,32]"])
    torch.manual_seed(0)
    rule = make_rule(cfg.rule, build_network(cfg, 4), 1)
    assert isinstance(rule, STDPTrace)
    w0 = rule.weights[0].clone()
    images = torch.rand(16, 3, 12, 12)
    for _ in range(4):
        rule.train_batch(images, torch.zeros(16, dtype=torch.long))
    assert rule.done and rule.seen == [32, 32]
    for w in rule.weights:
        assert 0 <= float(w.min()) and float(w.max()) <= 1
    assert not torch.equal(w0, rule.weights[0])
    torch.testing.assert_close(rule.weights[0].flatten(1).mean(1), w0.flatten(1).mean(1),
                               atol=1e-3, rtol=0)  # normalise=mean holds each kernel's mean
    assert rule.rows[0]["rate"] > 0
    _, outputs = rule.net.run(images)
    assert outputs["conv2"].sum() > 0
    dyn = rule.dynamics()
    assert dyn["conv1_rf"].shape == (4, 3, 3)


def test_config_rejects_analog_and_unknown_settings() -> None:
    with pytest.raises(ConfigError, match="encoding=analog"):
        typed_cfg(["rule=stdp_trace", "backbone.fc_units=[8]"])
    with pytest.raises(ConfigError, match="competition"):
        typed_cfg([*BASE, "rule.competition=global"])

"""The study's STDP approximation against updates computed by hand, for both kernel signs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from snnrsa.config import ConfigError
from snnrsa.rules import build_network, make_rule
from snnrsa.rules.stdp_published import ReluBatchNorm2d, published_kernel
from snnrsa.schema import STDPPublishedConfig

from conftest import typed_cfg

A, TAU = 0.003, 20.0


@pytest.mark.parametrize("sign", ["as_coded", "as_printed"])
def test_kernel_by_hand(sign: str) -> None:
    # image 1: pre fires at 2, post 0 at 5 (causal, dt=3), post 1 never (11, dt=9)
    # image 2: pre fires at 7, post 0 at 4 (anti-causal, dt=-3), post 1 at 7 (dt=0)
    t_pre = torch.tensor([[2.0], [7.0]])
    t_post = torch.tensor([[5.0, 11.0], [4.0, 7.0]])
    causal3 = A * math.exp(-3 / TAU) - A  # the code's kernel at dt=3: negative
    causal9 = A * math.exp(-9 / TAU) - A
    anti3 = A - A * math.exp(-3 / TAU)  # at dt=-3: positive
    expected = torch.tensor([[(causal3 + anti3) / 2], [(causal9 + 0.0) / 2]])
    if sign == "as_printed":
        expected = -expected
    cfg = STDPPublishedConfig(sign=sign)
    got = published_kernel(t_pre, t_post, cfg)
    torch.testing.assert_close(got, expected.float(), atol=1e-9, rtol=0)
    assert (got[1, 0] < 0) == (sign == "as_coded")  # causal pairs: depressed as coded
    clipped = published_kernel(t_pre, t_post, STDPPublishedConfig(sign=sign, a_plus=0.05,
                                                                  a_minus=0.05))
    assert float(clipped.abs().max()) == pytest.approx(0.002)


def _first_spike(u: torch.Tensor, rate: float, steps: int) -> float:
    for t in range(steps):
        if u[t] < rate / steps:
            return float(t)
    return float(steps + 1)


@pytest.mark.parametrize("sign", ["as_coded", "as_printed"])
def test_rule_update_on_tiny_input_by_hand(sign: str) -> None:
    cfg = typed_cfg(["rule=stdp_published", f"rule.sign={sign}", "backbone.channels=[2,3]",
                     "backbone.fc_units=[4]", "backbone.init=kaiming_normal",
                     "rsa.layers=[conv1]", "rule.a_plus=0.02", "rule.a_minus=0.01"])
    torch.manual_seed(0)
    net = build_network(cfg, 4)
    rule = make_rule(cfg.rule, net, 1)
    net.train()
    blocks = net.backbone.blocks
    assert all(isinstance(b.bn, ReluBatchNorm2d) for b in blocks)
    images = torch.rand(2, 3, 8, 8)
    w = [b.conv.weight.detach().clone() for b in blocks]
    head0 = net.backbone.head.weight.detach().clone()
    bn0 = blocks[0].bn.weight.detach().clone()

    # the forward pass by hand: conv -> ReLU -> BN (batch statistics) -> ReLU -> pool
    x = net.encoder(images)[0]
    acts = []
    with torch.no_grad():
        for i, block in enumerate(blocks):
            c = F.conv2d(x, w[i], padding=1)
            acts.append((x.mean((2, 3)), torch.relu(c).mean((2, 3))))
            bn = F.batch_norm(torch.relu(c), None, None, block.bn.weight, block.bn.bias, True)
            x = F.max_pool2d(torch.relu(bn), 2)

    torch.manual_seed(7)
    expected = []
    for (pre, post), wi in zip(acts, w):
        u_pre = torch.rand(*pre.shape, 10)
        u_post = torch.rand(*post.shape, 10)
        dw = torch.zeros(wi.shape[:2], dtype=torch.float64)
        for o in range(wi.shape[0]):
            for i in range(wi.shape[1]):
                total = 0.0
                for b in range(pre.shape[0]):
                    tp = _first_spike(u_pre[b, i], float(torch.sigmoid(pre[b, i])), 10)
                    tq = _first_spike(u_post[b, o], float(torch.sigmoid(post[b, o])), 10)
                    dt = tq - tp
                    k = 0.02 * math.exp(-max(dt, 0) / TAU) - 0.01 * math.exp(min(dt, 0) / TAU)
                    total += k if sign == "as_coded" else -k
                dw[o, i] = min(max(total / pre.shape[0], -0.002), 0.002)
        expected.append((wi.double() + 5e-4 * dw[:, :, None, None]).clamp(-1, 1))

    torch.manual_seed(7)
    loss, correct = rule.train_batch(images, torch.tensor([0, 1]))
    for block, exp in zip(blocks, expected):
        torch.testing.assert_close(block.conv.weight.double(), exp, atol=1e-7, rtol=0)
    assert any(not torch.equal(b.conv.weight, wi) for b, wi in zip(blocks, w))
    assert loss > 0 and 0 <= correct <= 2
    # FC head and BN affine move by backprop; conv weights are never in the optimiser
    assert not torch.equal(net.backbone.head.weight, head0)
    assert not torch.equal(blocks[0].bn.weight, bn0)
    assert all(b.conv.weight.grad is None for b in blocks)


def test_config_rejects_spiking_neurons_no_bn_and_unknown_sign() -> None:
    with pytest.raises(ConfigError, match="neuron=rate"):
        typed_cfg(["rule=stdp_published", "neuron=snntorch_lif", "neuron.time_steps=4",
                   "backbone.fc_units=[4]"])
    with pytest.raises(ConfigError, match="batch_norm"):
        typed_cfg(["rule=stdp_published", "backbone.batch_norm=false", "backbone.fc_units=[4]"])
    with pytest.raises(ConfigError, match="rule.sign"):
        typed_cfg(["rule=stdp_published", "rule.sign=flipped", "backbone.fc_units=[4]"])

"""The linear probe on frozen features: STDP-learned Conv1 decodes bar orientation."""

from __future__ import annotations

import numpy as np
import torch
from stimuli import oriented_bars

from snnrsa.model.linear_probe import fit_probe, frozen_features, linear_probes
from snnrsa.rules import build_network, make_rule

from conftest import typed_cfg


def test_fit_probe_separates_linear_classes() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 5))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    train_acc, test_acc = fit_probe(x[:300], y[:300], x[300:], y[300:])
    assert train_acc > 0.95 and test_acc > 0.9


def test_probe_on_stdp_features_does_not_touch_weights() -> None:
    torch.set_num_threads(1)
    cfg = typed_cfg(["rule=stdp", "neuron=snntorch_lif", "encoding=latency",
                     "neuron.time_steps=6", "backbone.channels=[8]", "backbone.kernel_size=5",
                     "backbone.fc_units=[8]", "rsa.layers=[conv1]", "rule.thresholds=[0.3]",
                     "rule.k_winners=[4]", "rule.ramp_every=160", "rule.layer_images=[960]"])
    torch.manual_seed(0)
    net = build_network(cfg, 4)
    rule = make_rule(cfg.rule, net, 1)
    x, y = oriented_bars(1400, 16, seed=2)
    for i in range(0, 960, 64):
        rule.train_batch(x[i:i + 64], y[i:i + 64])
    w = net.backbone.blocks[0].conv.weight.clone()
    res = linear_probes(net, x[960:1260], y[960:1260], x[1260:], y[1260:], ["conv1"], pool_to=2)[0]
    assert torch.equal(w, net.backbone.blocks[0].conv.weight)
    assert res.n_features == 8 * 2 * 2 and res.layer == "conv1"
    assert res.test_acc > 0.6, res  # chance is 0.25
    feats = frozen_features(net, (x[:4] * 255).to(torch.uint8), "conv1", pool_to=1)
    assert feats.shape == (4, 8) and np.isfinite(feats).all()
    both = frozen_features(net, (x[:4] * 255).to(torch.uint8), ["conv1", "fc1"], pool_to=1)
    np.testing.assert_array_equal(both["conv1"], feats)  # one pass serves every layer
    assert both["fc1"].shape == (4, 8)

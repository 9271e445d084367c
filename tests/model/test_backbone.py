"""The shared backbone: rate == plain CNN, snntorch == norse spikes, shapes and devices."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from snnrsa.config import BackboneConfig, ConfigError, NeuronConfig
from snnrsa.model.backbone import Backbone
from snnrsa.model.network import Network, pool_conv

from conftest import typed_cfg


def plain_cnn(bb: BackboneConfig, n_classes: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    chans = [bb.in_channels, *bb.channels]
    for i in range(len(bb.channels)):
        layers += [nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False),
                   nn.BatchNorm2d(chans[i + 1]), nn.ReLU(), nn.MaxPool2d(2)]
    layers += [nn.Flatten(), nn.Linear(bb.channels[-1] * 16, bb.fc_units[0]), nn.ReLU(),
               nn.Linear(bb.fc_units[0], n_classes)]
    return nn.Sequential(*layers)


def copy_weights(src: Backbone, dst: nn.Sequential) -> None:
    convs = [m for m in dst if isinstance(m, nn.Conv2d)]
    bns = [m for m in dst if isinstance(m, nn.BatchNorm2d)]
    lins = [m for m in dst if isinstance(m, nn.Linear)]
    for block, conv, bn in zip(src.blocks, convs, bns):
        conv.load_state_dict(block.conv.state_dict())
        bn.load_state_dict(block.bn.state_dict())
    lins[0].load_state_dict(src.fcs[0].linear.state_dict())
    lins[1].load_state_dict(src.head.state_dict())


@pytest.mark.parametrize("training", [False, True])
def test_rate_backbone_equals_plain_cnn(training: bool) -> None:
    torch.manual_seed(0)
    bb = BackboneConfig()
    net = Backbone(bb, NeuronConfig(name="rate", time_steps=1), n_classes=10)
    ref = plain_cnn(bb, 10)
    copy_weights(net, ref)
    # give BatchNorm non-trivial running statistics so eval mode is really tested
    for block in net.blocks:
        block.bn.running_mean.uniform_(-0.5, 0.5)
        block.bn.running_var.uniform_(0.5, 2.0)
    copy_weights(net, ref)
    net.train(training)
    ref.train(training)
    x = torch.randn(5, 3, 32, 32)
    head, outs = net(x.unsqueeze(0))
    expected = ref(x)
    torch.testing.assert_close(head[0], expected, rtol=0, atol=1e-5)
    assert set(outs) == {"conv1", "conv2", "conv3", "fc1"}
    assert outs["conv3"].shape == (1, 5, 128, 4, 4)


def test_rate_network_features_are_gap_of_block_outputs() -> None:
    cfg = typed_cfg(["neuron=rate"])
    torch.manual_seed(1)
    net = Network(cfg, 10).eval()
    x = torch.rand(3, 3, 32, 32)
    feats = net.features(x, ["conv1", "fc1"])
    block = net.backbone.blocks[0]
    normed = (x - net.encoder.mean) / net.encoder.std
    expected = block.pool(torch.relu(block.bn(block.conv(normed)))).mean((2, 3))
    torch.testing.assert_close(feats["conv1"], expected)
    assert feats["fc1"].shape == (3, 512)


@pytest.mark.parametrize("encoding", ["analog", "poisson", "latency"])
def test_snntorch_and_norse_backbones_spike_identically(encoding: str) -> None:
    outs = {}
    for backend in ("snntorch_lif", "norse_lif"):
        cfg = typed_cfg([f"neuron={backend}", f"encoding={encoding}", "neuron.time_steps=6"])
        torch.manual_seed(3)
        # BatchNorm on batch statistics: an untrained network's running statistics (mean 0,
        # var 1) leave sparse latency input with (almost) no spike
        net = Network(cfg, 10).train()
        torch.manual_seed(4)
        x = torch.rand(4, 3, 32, 32)
        with torch.no_grad():
            _, outs[backend] = net.run(x)
    spikes = 0.0
    for layer in ("conv1", "conv2", "conv3", "fc1"):
        a, b = outs["snntorch_lif"][layer], outs["norse_lif"][layer]
        assert torch.equal(a, b), layer
        assert set(a.unique().tolist()) <= {0.0, 1.0}
        spikes += float(a.detach().sum())
    assert spikes > 0, "no spikes at all: the comparison would be vacuous"


def test_larger_eval_images_are_pooled_to_fc_input() -> None:
    cfg = typed_cfg([])
    net = Network(cfg, 10).eval()
    feats = net.features(torch.rand(2, 3, 96, 96), ["conv3", "fc1"])
    assert feats["conv3"].shape == (2, 128) and feats["fc1"].shape == (2, 512)


def test_network_moves_with_all_buffers() -> None:
    cfg = typed_cfg(["neuron=norse_lif"])
    net = Network(cfg, 10).to(torch.float64)
    dtypes = {b.dtype for b in net.buffers() if b.is_floating_point()}
    assert dtypes == {torch.float64}


@pytest.mark.parametrize("study_rule", ["pc_published", "stdp_published"])
@pytest.mark.parametrize("bn_mode", ["train", "eval"])
def test_eval_fast_path_keeps_bn_eval_mode_and_bn_subclasses(study_rule: str, bn_mode: str) -> None:
    """The no-grad BatchNorm folding must not apply to BatchNorm kept in training mode at
    evaluation (bn_eval_mode=train: batch statistics) nor to a BatchNorm subclass with its own
    forward (stdp_published's ReLU-then-BN): features equal the unfolded path."""
    from snnrsa.rules import build_network, make_rule
    from snnrsa.run.evaluation import set_mode

    cfg = typed_cfg([f"+study_rule={study_rule}"])
    torch.manual_seed(0)
    net = build_network(cfg, 10)
    rule = make_rule(cfg.rule, net, n_epochs=1)
    for block in net.backbone.blocks:
        block.bn.running_mean.uniform_(-0.5, 0.5)
        block.bn.running_var.uniform_(0.5, 2.0)
    set_mode(net, False, bn_mode)
    x = torch.rand(6, 3, 48, 48)
    with torch.no_grad():
        fast = rule.features(x, ["conv1", "conv3", "fc1"])
        net.backbone.fold_bn = False
        ref = rule.features(x, ["conv1", "conv3", "fc1"])
    for name in fast:
        torch.testing.assert_close(fast[name], ref[name], rtol=1e-5, atol=1e-5, msg=name)


def test_grid_pooling_keeps_position_coarsely() -> None:
    """rsa.layer_pooling=grid: each conv map averaged to pool_grid x pool_grid cells (a 1 x 1 grid
    is GAP); the network's RSA features take that shape; a grid below 1 fails naming the key."""
    maps = torch.arange(2 * 3 * 8 * 8, dtype=torch.float64).view(2, 3, 8, 8)
    grid = pool_conv(maps, "grid", 4)
    assert grid.shape == (2, 3 * 16)
    assert grid[1, 16 + 5] == maps[1, 1, 2:4, 2:4].mean()  # channel 1, cell (1, 1)
    assert torch.equal(pool_conv(maps, "grid", 1), pool_conv(maps, "gap", 4))
    assert torch.equal(pool_conv(maps, "none", 4), maps.flatten(1))
    cfg = typed_cfg(["rsa.layer_pooling=grid", "rsa.pool_grid=2"])
    net = Network(cfg, 10).eval()
    with torch.no_grad():
        feats = net.features(torch.rand(3, 3, 32, 32), ["conv1", "fc1"])
    assert feats["conv1"].shape == (3, 32 * 4) and feats["fc1"].shape == (3, 512)
    with pytest.raises(ConfigError, match="rsa.pool_grid=0 must be >= 1"):
        typed_cfg(["rsa.layer_pooling=grid", "rsa.pool_grid=0"])

"""backbone.time_checkpoint (BPTT memory bound): conv blocks run and are recomputed k time steps
at a time, with BatchNorm statistics over the whole sequence; the training step must equal full
BPTT (outputs, every gradient, BatchNorm running statistics) to float tolerance."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from snnrsa.config import BackboneConfig, ConfigError, NeuronConfig
from snnrsa.model.backbone import Backbone
from snnrsa.model.network import Network

from conftest import typed_cfg


def _step(net: Network, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(5)  # the same Poisson frames for both networks
    out = net(x)
    F.cross_entropy(out, y).backward()
    return out


def _compare(overrides: list[str], chunk: int, batch: int = 5) -> None:
    cfg = typed_cfg(overrides)
    torch.manual_seed(0)
    # float64: chunked BatchNorm statistics sum in another order than nn.BatchNorm2d, and in
    # float32 that rounding can flip a spike whose membrane sits at the threshold, after which
    # the two steps differ by a whole spike; in float64 the two algorithms must agree tightly
    full = Network(cfg, 10).train().double()
    ckpt = copy.deepcopy(full)
    ckpt.backbone.time_checkpoint = chunk
    x, y = torch.rand(batch, 3, 32, 32, dtype=torch.float64), torch.arange(batch) % 10
    out_full, out_ckpt = _step(full, x, y), _step(ckpt, x, y)
    torch.testing.assert_close(out_ckpt, out_full, rtol=1e-10, atol=1e-10)
    for (name, p), (_, q) in zip(full.named_parameters(), ckpt.named_parameters()):
        scale = float(p.grad.abs().max()) + 1e-12
        torch.testing.assert_close(q.grad / scale, p.grad / scale, rtol=0, atol=1e-10, msg=name)
    sa, sb = full.state_dict(), ckpt.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sb[k], sa[k], rtol=1e-10, atol=1e-10, msg=k)


@pytest.mark.parametrize("chunk", [1, 3, 6])
@pytest.mark.parametrize(
    "neuron,encoding,impl",
    [
        ("snntorch_lif", "poisson", "fast"),
        ("norse_lif", "poisson", "fast"),
        ("snntorch_lif", "analog", "fast"),  # static input: conv1 once, neuron chunked
        ("norse_lif", "latency", "library"),
    ],
)
def test_time_checkpoint_step_equals_full_bptt(neuron, encoding, impl, chunk) -> None:
    _compare(
        [f"neuron={neuron}", f"encoding={encoding}", "neuron.time_steps=6", f"neuron.impl={impl}"], chunk
    )


def test_time_checkpoint_rate_network_equals_plain() -> None:
    _compare(["neuron=rate"], 1, batch=6)


def test_time_checkpoint_with_feedback_alignment_convs() -> None:
    """FA swaps the conv class; the chunked path calls the conv module, so FA's backward holds."""
    from snnrsa.rules import make_rule

    cfg = typed_cfg(["neuron=snntorch_lif", "encoding=poisson", "neuron.time_steps=4", "rule=fa"])
    torch.manual_seed(0)
    full = Network(cfg, 10).train().double()  # float64: see _compare
    make_rule(cfg.rule, full, n_epochs=1)
    ckpt = copy.deepcopy(full)
    ckpt.backbone.time_checkpoint = 2
    x, y = torch.rand(4, 3, 32, 32, dtype=torch.float64), torch.arange(4)
    _step(full, x, y), _step(ckpt, x, y)
    for (name, p), (_, q) in zip(full.named_parameters(), ckpt.named_parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-9, atol=1e-12, msg=name)


def test_time_checkpoint_off_in_eval_and_no_grad() -> None:
    cfg = typed_cfg(["neuron=snntorch_lif", "neuron.time_steps=4", "backbone.time_checkpoint=2"])
    torch.manual_seed(0)
    net = Network(cfg, 10)
    assert net.backbone.time_checkpoint == 2
    ref = copy.deepcopy(net)
    ref.backbone.time_checkpoint = 0
    x = torch.rand(3, 3, 32, 32)
    net.eval(), ref.eval()
    with torch.no_grad():
        assert torch.equal(net(x), ref(x))


@pytest.mark.parametrize("value", [-1, 5])
def test_bad_time_checkpoint_is_rejected(value: int) -> None:
    with pytest.raises(ConfigError, match="backbone.time_checkpoint"):
        typed_cfg(["neuron=snntorch_lif", "neuron.time_steps=4", f"backbone.time_checkpoint={value}"])


def test_non_integer_time_checkpoint_is_rejected() -> None:
    with pytest.raises(ConfigError, match="time_checkpoint"):
        typed_cfg(["neuron=snntorch_lif", "neuron.time_steps=4", "backbone.time_checkpoint=half"])


def test_backbone_rejects_negative_chunk() -> None:
    with pytest.raises(ValueError, match="time_checkpoint"):
        Backbone(BackboneConfig(time_checkpoint=-2), NeuronConfig(), 10)

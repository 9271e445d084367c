"""The published preset's epoch-0 weights are the study's: each study network is rebuilt here by
hand the way its code draws it (programs/learning_rules_v7.py of nilsleut/learning-rules-rsa:
BP_CNN, FA_CNN, STDP_CNN), from the same seed, and every parameter and buffer of snnrsa's network
must be bit-identical."""

from __future__ import annotations

import pytest
import torch
from test_presets import THINGS
from torch import nn

from snnrsa.rules import build_network, make_rule
from snnrsa.run.state import seed_everything

from conftest import typed_cfg

CHANNELS = [(3, 32), (32, 64), (64, 128)]


def study_weights(rule: str, seed: int) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """The study's parameters under snnrsa's names, and FA's feedback tensors, drawn in the
    order of the study's constructors."""
    torch.manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    feedback = []
    for i, (c_in, c_out) in enumerate(CHANNELS):
        if rule == "fa":  # FAConv2d: W = kaiming_normal_(empty), b = zeros, B = xavier(randn)
            w = nn.init.kaiming_normal_(torch.empty(c_out, c_in, 3, 3))
            feedback.append(nn.init.xavier_normal_(torch.randn(c_out, c_in, 3, 3)))
        else:  # nn.Conv2d(bias=False); STDP_Conv then re-draws it with kaiming_normal_
            conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
            if rule == "stdp_published":
                nn.init.kaiming_normal_(conv.weight)
            w = conv.weight
        out[f"backbone.blocks.{i}.conv.weight"] = w
        for k, v in nn.BatchNorm2d(c_out).state_dict().items():
            out[f"backbone.blocks.{i}.bn.{k}"] = v
    fc1, fc2 = nn.Linear(2048, 512), nn.Linear(512, 10)
    for k, v in fc1.state_dict().items():
        out[f"backbone.fcs.0.linear.{k}"] = v
    for k, v in fc2.state_dict().items():
        out[f"backbone.head.{k}"] = v
    return out, feedback


@pytest.mark.parametrize("rule", ["untrained", "bp", "fa", "stdp_published"])
def test_published_preset_init_equals_the_study_code(rule: str) -> None:
    """FA_CNN's conv bias ``b`` (zeros, cancelled by the BatchNorm that follows) is the one
    study parameter snnrsa's bias-free convs do not have."""
    cfg = typed_cfg(["experiment=leutenegger2026_published", f"study_rule={rule}", "seed=123",
                     *THINGS])
    seed_everything(cfg.seed)  # as the run loop does before building the network
    net = build_network(cfg, 10)
    fitted = make_rule(cfg.rule, net, 40)
    expected, feedback = study_weights(rule, 123)
    ours = {k: v for k, v in net.state_dict().items() if not k.startswith("encoder.")}
    # the study normalises in its image transform; snnrsa's encoder holds the same constants
    assert net.encoder.mean.flatten().tolist() == pytest.approx([0.4914, 0.4822, 0.4465])
    assert sorted(ours) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(ours[key], value), key
    if rule == "fa":
        for i, b in enumerate(feedback):
            assert torch.equal(fitted.layers[f"conv{i + 1}"].feedback, b), i
    # the FC layers are PyTorch's default (uniform within 1/sqrt(fan_in)), not kaiming_normal
    bound = 1 / 2048**0.5
    assert ours["backbone.fcs.0.linear.weight"].abs().max() <= bound
    assert ours["backbone.fcs.0.linear.bias"].abs().min() > 0

"""Feedback alignment: local weight gradients, errors sent through B (checked by hand), B frozen,
sign-concordant feedback equal to BP when magnitudes match, and W-B alignment during training."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from snnrsa.config import ConfigError
from snnrsa.model.network import Network
from snnrsa.rules import build_network, make_rule
from snnrsa.rules.base import frozen_bn_stats
from snnrsa.rules.fa import FA

from conftest import typed_cfg

SMALL = ["rule=fa", "backbone.channels=[4,8]", "backbone.fc_units=[16]", "backbone.pool_to=2",
         "data.image_size=8", "brain.resolution=8", "rsa.layers=[conv1,fc1]"]


def fa_net(overrides: list[str]) -> tuple[Network, FA]:
    cfg = typed_cfg([*SMALL, *overrides])
    torch.manual_seed(0)
    net = build_network(cfg, 10)
    return net, make_rule(cfg.rule, net, 5)


def batch(n: int = 6, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def param_grads(net: Network) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("neuron", [["neuron=rate"], ["neuron=snntorch_lif", "neuron.time_steps=3"]])
def test_weight_gradient_is_local_and_error_goes_through_b(neuron: list[str]) -> None:
    net, rule = fa_net(["rule.layers=all", *neuron])
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(name):
        def keep(_module, inputs, out):
            if inputs[0].requires_grad:
                inputs[0].retain_grad()
            out.retain_grad()
            seen[name] = (inputs[0], out)
        return keep

    for name, layer in rule.layers.items():
        layer.register_forward_hook(hook(name))
    net.train()
    x, y = batch()
    F.cross_entropy(net(x), y).backward()
    downstream = 0
    for name, layer in rule.layers.items():
        inp, out = seen[name]
        delta = out.grad
        assert delta.abs().sum() > 0, name
        w, b = layer.weight, layer.feedback
        if isinstance(layer, nn.Conv2d):
            k, pad = w.shape[-1], layer.padding[0]
            cols = F.unfold(inp.detach(), k, padding=pad)  # [N, C_in * k * k, L]
            hand_w = torch.einsum("nol,nil->oi", delta.flatten(2), cols).view_as(w)
            hand_in = F.conv_transpose2d(delta, b, padding=pad)
            bp_in = F.conv_transpose2d(delta, w.detach(), padding=pad)
        else:
            hand_w = delta.T @ inp.detach()
            hand_in, bp_in = delta @ b, delta @ w.detach()
        torch.testing.assert_close(w.grad, hand_w, rtol=1e-4, atol=1e-6)
        if layer.bias is not None:
            torch.testing.assert_close(layer.bias.grad, delta.sum(0), rtol=1e-4, atol=1e-6)
        if inp.requires_grad:
            downstream += 1
            torch.testing.assert_close(inp.grad, hand_in, rtol=1e-4, atol=1e-6)
            assert not torch.allclose(inp.grad, bp_in, rtol=1e-2, atol=1e-4)
    assert downstream == len(rule.layers) - 1  # every layer but conv1 (whose input is the image)


def test_feedback_is_frozen_and_not_a_parameter() -> None:
    net, rule = fa_net(["rule.layers=all", "rule.lr=0.05"])
    before = {n: layer.feedback.clone() for n, layer in rule.layers.items()}
    weights = {n: layer.weight.detach().clone() for n, layer in rule.layers.items()}
    net.train()
    for seed in range(4):
        rule.train_batch(*batch(16, seed))
    rule.end_epoch()
    for name, layer in rule.layers.items():
        assert torch.equal(layer.feedback, before[name])
        assert not torch.equal(layer.weight, weights[name])
    params = {id(p) for p in net.parameters()}
    assert not any(id(layer.feedback) in params for layer in rule.layers.values())
    cfg = typed_cfg(SMALL)
    assert list(net.state_dict()) == list(build_network(cfg, 10).state_dict())

    _, fresh = fa_net(["rule.layers=all", "rule.feedback_seed=7"])
    assert not torch.equal(fresh.layers["conv2"].feedback, before["conv2"])
    fresh.load_state_dict(rule.state_dict())
    for name, layer in fresh.layers.items():
        assert torch.equal(layer.feedback, before[name])
    assert fresh.log_rows() == rule.log_rows()


def test_feedback_stream_depends_on_its_seed_only() -> None:
    _, a = fa_net(["rule.feedback_seed=3"])
    torch.manual_seed(123)  # the global generator does not feed B
    _, b = fa_net(["rule.feedback_seed=3"])
    _, c = fa_net(["rule.feedback_seed=4"])
    assert torch.equal(a.layers["conv2"].feedback, b.layers["conv2"].feedback)
    assert not torch.equal(a.layers["conv2"].feedback, c.layers["conv2"].feedback)


@pytest.mark.parametrize("kind", ["sign_symmetric", "random_magnitude_sign_of_w"])
def test_sign_concordant_feedback_equals_bp_when_magnitudes_match(kind: str) -> None:
    net, rule = fa_net(["rule.layers=all", f"rule.feedback={kind}"])
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for layer in rule.layers.values():
            if kind == "sign_symmetric":  # one magnitude per layer: |W| is its RMS
                layer.weight.copy_(0.2 * torch.sign(layer.weight))
            else:  # |B| = |W| with B's own random signs: only W's sign may reach the backward
                signs = torch.randint(0, 2, layer.weight.shape, generator=g) * 2.0 - 1
                layer.feedback.copy_(layer.weight.abs() * signs)
    net.train()
    x, y = batch(8)
    grads = {}
    for exact in (False, True):
        for layer in rule.layers.values():
            layer.exact = exact
        net.zero_grad()
        F.cross_entropy(net(x), y).backward()
        grads[exact] = param_grads(net)
    for name, grad in grads[True].items():
        torch.testing.assert_close(grads[False][name], grad, rtol=1e-5, atol=1e-7)


def test_alignment_angle_falls_below_90_during_training() -> None:
    """An easy task (10 noisy prototypes), FA in every layer: the layers whose B carries errors
    (all but conv1) align their W with B, and FA's error signals come within 90 deg of BP's."""
    net, rule = fa_net(["rule.layers=all", "rule.lr=0.05"])
    g = torch.Generator().manual_seed(0)
    protos = torch.rand(10, 3, 8, 8, generator=g)
    net.train()
    for step in range(200):
        y = torch.randint(0, 10, (64,), generator=g)
        x = (protos[y] + 0.3 * torch.randn(64, 3, 8, 8, generator=g)).clamp(0, 1)
        rule.train_batch(x, y)
        if step % 50 == 49:
            rule.end_epoch()
    rows = {(r["epoch"], r["layer"]): r for r in rule.log_rows()}
    assert sorted({e for e, _ in rows}) == [0, 1, 2, 3, 4]
    for layer in ("conv2", "fc1", "head"):
        assert rows[4, layer]["angle_w_b"] < min(85.0, rows[0, layer]["angle_w_b"]), layer
    for layer in ("conv1", "conv2", "fc1"):
        assert rows[4, layer]["angle_signal"] < 85.0, layer
    assert rows[4, "head"]["angle_signal"] < 1e-3  # the output error is the true one


def test_published_default_and_bad_values() -> None:
    cfg = typed_cfg(["rule=fa", "seed=11"])
    assert (cfg.rule.layers, cfg.rule.feedback, cfg.rule.feedback_init) == (
        "conv", "fa", "xavier_normal")
    assert (cfg.rule.optimizer, cfg.rule.lr, cfg.rule.momentum, cfg.rule.weight_decay,
            cfg.rule.schedule, cfg.rule.grad_clip) == ("sgd", 5e-4, 0.9, 1e-4, "cosine", 1.0)
    assert cfg.rule.feedback_seed == 11
    _, rule = fa_net([])
    assert list(rule.layers) == ["conv1", "conv2"]
    for bad, key in (("rule.feedback=mirror", "rule.feedback"),
                     ("rule.layers=fc", "rule.layers"),
                     ("rule.feedback_init=orthogonal", "rule.feedback_init")):
        with pytest.raises(ConfigError, match=key):
            fa_net([bad])


@pytest.mark.parametrize("neuron", [["neuron=rate"], ["neuron=snntorch_lif", "neuron.time_steps=3"]])
@pytest.mark.parametrize("which", ["all", "conv"])
def test_direct_feedback_sends_the_output_error_through_b(neuron: list[str], which: str) -> None:
    """DFA (Nøkland 2016) by hand: every chosen block's output receives e @ B_l, with e the
    output error and B_l its own fixed matrix; the block's weights get the local gradient of
    that signal; layers not chosen and the head get BP's gradient."""
    net, rule = fa_net([f"rule.layers={which}", "rule.feedback=direct", *neuron])
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    bb = net.backbone
    for name, layer in {**{f"conv{i + 1}": b for i, b in enumerate(bb.blocks)},
                        "fc1": bb.fcs[0], "head": bb.head}.items():
        layer.register_forward_hook(
            lambda _m, i, out, name=name: seen.__setitem__(name, (i[0], out)), prepend=True)
    net.train()
    x, y = batch(8)
    logits = net(x)
    F.cross_entropy(logits, y).backward()
    grads = param_grads(net)
    head_in, head_out = seen["head"]
    head_out = head_out.unflatten(0, (-1, 8))  # the head runs on [T * B] frames
    e = torch.autograd.grad(F.cross_entropy(net.readout(head_out), y), head_out)[0]
    if neuron == ["neuron=rate"]:  # the output error of the mean cross-entropy
        torch.testing.assert_close(e[0], (logits.softmax(1) - F.one_hot(y, 10)) / 8)
    torch.testing.assert_close(grads["backbone.head.weight"],
                               e.flatten(0, 1).T @ head_in.detach())
    chosen = ["conv1", "conv2", "fc1"] if which == "all" else ["conv1", "conv2"]
    assert sorted(rule.direct_feedback) == chosen
    rule.set_exact(True)
    with frozen_bn_stats(net):
        bp = dict(zip([n for n, _ in net.named_parameters()],
                      torch.autograd.grad(F.cross_entropy(net(x), y), list(net.parameters()))))
    prefix = {"conv1": "backbone.blocks.0.", "conv2": "backbone.blocks.1.",
              "fc1": "backbone.fcs.0."}
    for name, pre in prefix.items():
        layer = dict(net.named_modules())[pre[:-1]]
        names = [n for n in grads if n.startswith(pre)]
        if name not in chosen:  # backprop from the head
            for n in names:
                torch.testing.assert_close(grads[n], bp[n], rtol=1e-5, atol=1e-7)
            continue
        rule.set_exact(False)
        b = rule.direct_feedback[name]
        assert b.shape == (10, seen[name][1][0, 0].numel())
        delta = (e.flatten(0, 1) @ b).view_as(seen[name][1])
        with frozen_bn_stats(net):  # the block's own backward from its input, by autograd
            out = layer(seen[name][0].detach(), **({"static": name == "conv1"}
                                                   if name.startswith("conv") else {}))
            hand = torch.autograd.grad(out, [p for _, p in layer.named_parameters()], delta)
        for n, h in zip(names, hand):
            torch.testing.assert_close(grads[n], h, rtol=1e-4, atol=1e-7)
        w = pre + ("conv.weight" if name.startswith("conv") else "linear.weight")
        assert not torch.allclose(grads[w], bp[w], rtol=1e-2, atol=1e-5), name


def test_direct_feedback_is_fixed_resumes_and_logs_signal_angles() -> None:
    net, rule = fa_net(["rule.layers=all", "rule.feedback=direct", "rule.lr=0.05"])
    net.train()
    for seed in range(3):
        rule.train_batch(*batch(16, seed))
    rule.end_epoch()
    b = {n: t.clone() for n, t in rule.direct_feedback.items()}
    rule.train_batch(*batch(16, 5))
    assert all(torch.equal(rule.direct_feedback[n], t) for n, t in b.items())
    rows = pd.DataFrame(rule.log_rows())
    assert list(rows.layer) == ["conv1", "conv2", "fc1"] * 2
    assert "angle_w_b" not in rows and rows.angle_signal.between(0, 180).all()
    _, fresh = fa_net(["rule.layers=all", "rule.feedback=direct", "rule.feedback_seed=9"])
    fresh.load_state_dict(rule.state_dict())
    assert all(torch.equal(fresh.direct_feedback[n], t) for n, t in b.items())


def test_signal_angles_use_batch_statistics_and_skip_unused_b() -> None:
    """The probe measures what training computes: BatchNorm on the probe's batch statistics
    (running statistics untouched), and no W-B angle for conv1, whose B never carries an error."""
    net, rule = fa_net([])
    net.train()
    x, y = batch(16)
    rule.probe = x, y
    bns = [b.bn for b in net.backbone.blocks]
    for bn in bns:  # running statistics far from the probe's: eval-mode angles would differ
        bn.running_mean.fill_(5.0)
    before = [bn.running_mean.clone() for bn in bns]
    fa_sig, carries = rule.error_signals(exact=False)
    assert carries == {"conv1": False, "conv2": True}
    assert all(torch.equal(bn.running_mean, m) for bn, m in zip(bns, before))
    assert net.training and all(bn.training for bn in bns)
    out = {}
    hook = net.backbone.blocks[1].conv.register_forward_hook(
        lambda _m, _i, o: out.__setitem__("conv2", o))
    with frozen_bn_stats(net), torch.random.fork_rng():
        torch.manual_seed(0)
        loss = F.cross_entropy(net(x), y)
    hook.remove()
    torch.testing.assert_close(fa_sig["conv2"], torch.autograd.grad(loss, out["conv2"])[0])
    rule._log()
    rows = {r["layer"]: r for r in rule.log_rows()}
    assert "angle_w_b" not in rows["conv1"] and 0 < rows["conv2"]["angle_w_b"] < 180

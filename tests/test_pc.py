"""Predictive coding: canonical PC's updates follow BP's gradients and inference lowers the energy;
the study's PC keeps W_N and its predictions frozen and makes clamped, spatially uniform updates;
both PC rules and FA write complete run directories in one multirun."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from test_main_job import TINY, snnrsa

from snnrsa.config import ConfigError
from snnrsa.network import Network
from snnrsa.rules import make_rule
from snnrsa.rules.pc import PC, frozen_bn_stats
from snnrsa.rules.pc_published import PCPublished

from conftest import typed_cfg

SMALL = ["backbone.channels=[4,8,8]", "backbone.fc_units=[16]", "backbone.pool_to=2",
         "data.image_size=16", "brain.resolution=16"]


def build(rule: str, overrides: list[str] = ()) -> tuple[Network, PC | PCPublished]:
    cfg = typed_cfg([f"rule={rule}", *SMALL, *overrides])
    torch.manual_seed(0)
    net = Network(cfg, 10)
    return net, make_rule(cfg.rule, net, 3)


def batch(n: int = 16, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("energy", ["ce", "mse"])
def test_pc_updates_follow_bp_gradients(energy: str) -> None:
    """Feed-forward initialisation and a small inference rate: once the error has reached a
    layer (one step per stage), PC's update of every parameter points along BP's gradient."""
    net, rule = build("pc", [f"rule.output_energy={energy}", "rule.inference_rate=0.01"])
    net.double().train()
    x, y = batch()
    x = x.double()
    with frozen_bn_stats(net):
        logits = net(x)
        if energy == "ce":
            loss = F.cross_entropy(logits, y)
        else:
            loss = 0.5 * (F.one_hot(y, 10).double() - logits).pow(2).sum() / len(y)
        bp = dict(zip([n for n, _ in net.named_parameters()],
                      torch.autograd.grad(loss, list(net.parameters()))))
    x0 = net.encoder(x)
    for steps in (4, 6, 10):  # 4 hidden value nodes: conv1 has an error after 4 steps
        xs, _, _ = rule.infer(x0, y, steps)
        rule.weight_gradients(x0, xs, y)
        for name, p in net.named_parameters():
            a, b = p.grad.flatten(), bp[name].flatten()
            cos = float(a @ b / (a.norm() * b.norm()))  # no eps: lower layers' updates are tiny
            assert cos >= 0.99, (steps, name, cos)


def test_inference_lowers_the_energy_monotonically() -> None:
    net, rule = build("pc")
    net.train()
    x, y = batch(32)
    _, _, trace = rule.infer(net.encoder(x), y, 40)
    total = [sum(step) for step in trace]
    assert all(after <= before for before, after in pairwise(total))
    assert total[-1] < 0.95 * total[0]
    assert trace[0][:-1] == [0.0] * 4  # feed-forward start: only the output has an error


def test_pc_training_step_and_energy_log() -> None:
    net, rule = build("pc")
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    net.train()
    for seed in range(2):
        loss, correct = rule.train_batch(*batch(16, seed))
        assert loss > 0 and 0 <= correct <= 16
    rule.end_epoch()
    for name, p in net.named_parameters():
        assert not torch.equal(p, before[name]), name  # every layer learns
    bn = net.backbone.blocks[0].bn
    assert int(bn.num_batches_tracked) == 2  # inference does not count as extra batches
    rows = pd.DataFrame(rule.log_rows())
    assert list(rows.layer) == ["conv1", "conv2", "conv3", "fc1", "output"]
    assert (rows.epoch == 1).all()
    assert rows.energy_end.sum() < rows.energy_start.sum()


@pytest.mark.parametrize("rule", ["pc", "pc_published"])
def test_pc_rejects_spiking_neurons(rule: str) -> None:
    with pytest.raises(ConfigError, match=rf"rule={rule} .*neuron.time_steps=4"):
        build(rule, ["neuron=snntorch_lif", "neuron.time_steps=4"])


def test_published_freezes_w_n_predictions_and_batchnorm_affine() -> None:
    net, rule = build("pc_published")
    frozen = {"conv3": net.backbone.blocks[2].conv.weight,
              **{f"bn{i}.{k}": getattr(b.bn, k) for i, b in enumerate(net.backbone.blocks)
                 for k in ("weight", "bias")},
              **{f"pred.{k}": v for k, v in rule.predictors.state_dict().items()}}
    frozen0 = {k: v.detach().clone() for k, v in frozen.items()}
    learned = {"conv1": net.backbone.blocks[0].conv.weight,
               "conv2": net.backbone.blocks[1].conv.weight,
               "fc1": net.backbone.fcs[0].linear.weight, "head": net.backbone.head.weight}
    learned0 = {k: v.detach().clone() for k, v in learned.items()}
    net.train()
    for seed in range(3):
        rule.train_batch(*batch(16, seed))
    for k, v in frozen.items():
        assert torch.equal(v, frozen0[k]), k  # bit-identical
    for k, v in learned.items():
        assert not torch.equal(v, learned0[k]), k


def test_published_updates_are_uniform_clamped_and_as_coded() -> None:
    net, rule = build("pc_published")
    net.double().train()
    rule.predictors.double()
    x, _ = batch(16)
    with torch.no_grad():
        x0 = net.encoder(x.double())
        rs = rule.infer(rule.bottom_up(x0))
        updates = rule.conv_updates(x0, rs)
        assert len(updates) == 2  # W1 and W2; W3 has none
        for u, block in zip(updates, net.backbone.blocks):
            assert u.shape == block.conv.weight.shape
            assert torch.equal(u, u[:, :, :1, :1].expand_as(u))  # same at every kernel position
            assert u.abs().max() <= 0.01
        # W1 by hand: clamped change of r1, averaged over batch and space, times the mean input
        r1_ff = net.backbone.blocks[0](x0)[0]
        change = (rs[0] - r1_ff).clamp(-0.5, 0.5).mean((0, 2, 3))
        hand = torch.outer(change, x0[0].mean((0, 2, 3))).clamp(-0.01, 0.01)
        torch.testing.assert_close(updates[0][:, :, 1, 1], hand)

        rule.cfg.update_clamp = 1e-6  # a clamp that binds
        tight = rule.conv_updates(x0, rs)
        assert all(u.abs().max() == 1e-6 for u in tight)
        w1 = net.backbone.blocks[0].conv.weight.clone()
    rule.cfg.update_clamp = 0.01
    rule.train_batch(x.double(), torch.zeros(16, dtype=torch.long))
    step = net.backbone.blocks[0].conv.weight - w1
    torch.testing.assert_close(step, 1e-4 * updates[0], rtol=1e-6, atol=1e-12)


def test_published_features_are_post_inference() -> None:
    layers = ["conv1", "conv2", "conv3", "fc1"]
    net, rule = build("pc_published")
    net.eval()
    x, _ = batch(8)
    with torch.no_grad():
        post = rule.features(x, layers)
        ff = net.features(x, layers)
        assert not torch.allclose(post["conv1"], ff["conv1"])
        assert rule.predict(x).shape == (8, 10)
        rule.cfg.inference_steps = 0
        same = rule.features(x, layers)
        for name in layers:
            torch.testing.assert_close(same[name], ff[name])
        torch.testing.assert_close(rule.predict(x), net(x))


@pytest.mark.slow
def test_multirun_writes_complete_run_directories(tmp_path: Path, cache_dir: Path) -> None:
    snnrsa(["-m", *TINY, "rule=bp,fa,pc,pc_published", f"hydra.sweep.dir={tmp_path}"], cache_dir)
    jobs = {pd.read_csv(p).rule.iloc[0]: p.parent for p in tmp_path.rglob("rsa.csv")}
    assert sorted(jobs) == ["bp", "fa", "pc", "pc_published"]
    for rule, job in jobs.items():
        rsa = pd.read_csv(job / "rsa.csv")
        assert sorted(rsa.epoch.unique()) == [0, 1, 2] and rsa.rho.notna().all(), rule
        assert (job / "results.h5").exists() and (job / "train.csv").exists()
        assert sorted(p.name for p in (job / "checkpoints").iterdir()) == [
            "epoch_0.pt", "epoch_1.pt", "epoch_2.pt"]
        if rule in ("fa", "pc"):
            log = pd.read_csv(job / "rule_log.csv")
            assert log.epoch.max() == 2, rule

"""STDP dynamics snapshots, config-time checks and adaptive thresholds on the study network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from snnrsa.data.procedural import make_dataset
from snnrsa.rules import build_network, make_rule
from snnrsa.rules.stdp.functional import THRESHOLD_MARGIN, adaptive_threshold, pool_times

from conftest import typed_cfg

STUDY = [  # the study's 3x3 network with the encoding group's latency code and adaptive thresholds
    "rule=stdp",
    "backbone=study",
    "rule.coding=encoding",
    "rule.threshold_mode=adaptive",
    "rule.thresholds=[0.2]",
    "rule.threshold_unit=fan_in",
    "rule.pointwise_inhibition=always",
    "neuron=snntorch_lif",
    "encoding=latency",
    "neuron.time_steps=8",
    "rsa.layers=[conv1,conv2,conv3]",
]


def procedural(n: int, seed: int) -> torch.Tensor:
    x, _ = make_dataset(n, 32, seed=seed)
    return torch.from_numpy(x).permute(0, 3, 1, 2).float().div(255)


def test_adaptive_threshold_quantile_and_no_silent_image() -> None:
    peak = torch.zeros(3, 1, 2, 5)
    peak[0, 0, 0] = torch.arange(1.0, 6.0)  # image 0: 1..5
    peak[1, 0, 1] = torch.arange(6.0, 11.0)  # image 1: 6..10 (image 2: no input at all)
    # median of 1..10, capped by image 0's max; lowered by the margin that makes units at exactly
    # that potential fire whatever the summation order
    th = adaptive_threshold(peak, 0.5, 7.0)
    assert th < 5.0 and th == pytest.approx(5.0 * (1 - THRESHOLD_MARGIN), rel=1e-6)
    assert adaptive_threshold(peak, 0.2, 7.0) == pytest.approx(2.0 * (1 - THRESHOLD_MARGIN), rel=1e-6)
    assert adaptive_threshold(torch.zeros(2, 1, 2, 2), 0.5, 7.0) == 7.0


def test_study_network_layers_fire_for_every_image_with_default_thresholds() -> None:
    """The 32/64/128 3x3 network on procedural objects: with the default adaptive thresholds no
    image leaves conv1..conv3 silent (so their RDMs are finite), before and after greedy training."""
    torch.set_num_threads(1)
    cfg = typed_cfg(STUDY)
    torch.manual_seed(0)
    net = build_network(cfg, 10)
    rule = make_rule(cfg.rule, net, 1)
    net.eval()

    def check(images: torch.Tensor) -> None:
        feats = net.features(images, ["conv1", "conv2", "conv3"])
        for name, f in feats.items():
            f = f.reshape(len(images), -1)
            constant = (f.max(1).values == f.min(1).values).sum()
            assert int(constant) == 0, (name, int(constant))

    check(procedural(32, seed=5))  # the first batch calibrates, as at the epoch-0 checkpoint
    check(procedural(32, seed=6))  # held-out images
    net.train()
    train = procedural(160, seed=7)
    rule.cfg.layer_images = [96, 32, 32]
    for i in range(0, 160, 32):
        rule.train_batch(train[i : i + 32], torch.zeros(32, dtype=torch.long))
    assert rule.done and rule.seen == [96, 32, 32]
    net.eval()
    check(procedural(32, seed=8))  # each layer's threshold was set again as its training began
    log = rule.log_rows()
    assert [r["layer"] for r in log] == [0, 0, 0, 1, 2]
    assert all(r["rate"] > 0 for r in log)


def test_dynamics_snapshot() -> None:
    torch.set_num_threads(1)
    cfg = typed_cfg(
        [
            *STUDY,
            "backbone.channels=[8,8]",
            "rsa.layers=[conv1]",
            "backbone.kernel_size=5",
            "rule.layer_images=[256,64]",
            "rule.ramp_every=32",  # a fast ramp: C falls clearly within these 256 images
        ]
    )
    torch.manual_seed(0)
    rule = make_rule(cfg.rule, build_network(cfg, 10), 1)
    images = procedural(256, seed=1)
    first = rule.dynamics()  # before any training: no activity snapshot yet
    assert "conv1_rate" not in first and float(first["conv1_dw_max_abs"]) == 0.0
    for i in range(0, 256, 64):
        rule.train_batch(images[i : i + 64], torch.zeros(64, dtype=torch.long))
    d = rule.dynamics()
    for layer in ("conv1", "conv2"):
        assert d[f"{layer}_w_hist"].sum() == rule.weights[int(layer[-1]) - 1].numel()
        assert 0 <= float(d[f"{layer}_at_bounds"]) <= 1
        assert d[f"{layer}_spike_time_hist"].shape == (rule.time_steps + 1,)
        assert d[f"{layer}_spike_time_hist"].sum() == 64 * 8 * (32 if layer == "conv1" else 16) ** 2
        assert 0 <= float(d[f"{layer}_silent"]) <= 1 and float(d[f"{layer}_rate"]) > 0
    assert float(d["conv1_C"]) < float(first["conv1_C"])
    assert float(d["conv1_dw_mean_abs"]) > 0 and float(d["conv2_dw_mean_abs"]) == 0
    assert int(d["conv1_winners"]) == int((d["conv1_wins"] > 0).sum()) > 0
    assert d["conv1_wins"].sum() == rule.wins[0].sum()
    assert d["conv1_rf"].shape == (8, 5, 5) and d["conv1_orientation_index"].shape == (8,)
    assert np.all((d["conv1_orientation_index"] >= 0) & (d["conv1_orientation_index"] <= 1))
    again = rule.dynamics()  # change and wins since the last call
    assert float(again["conv1_dw_max_abs"]) == 0 and again["conv1_wins"].sum() == 0


@pytest.mark.parametrize("base", [[*STUDY, "rule.beta=0.9"], ["rule=stdp"]])
def test_network_forward_matches_the_learning_path(base: list[str]) -> None:
    """``net.run`` (spike trains, as RSA and probes see it) and the rule's evaluation path give
    the same first spikes in every layer (leaky study network; the recipe network)."""
    torch.set_num_threads(1)
    cfg = typed_cfg([*base, "backbone.channels=[4,6,8]"])
    torch.manual_seed(0)
    rule = make_rule(cfg.rule, build_network(cfg, 10), 1)
    images = procedural(8, seed=2)
    ios = rule.all_io(images)
    _, outputs = rule.net.run(images)
    for i, io in enumerate(ios):
        spikes = outputs[f"conv{i + 1}"]
        assert spikes.sum(0).max() <= 1
        t = torch.where(spikes.sum(0) > 0, spikes.argmax(0), rule.time_steps)
        pool = rule.net.backbone.blocks[i].pool
        assert torch.equal(t, pool_times(io.t_post, 2, pool.padding))  # block outputs are pooled
        assert (io.t_post < rule.time_steps).sum() > 0

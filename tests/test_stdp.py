"""Canonical conv STDP: the batched rule against a plain per-image reference, and what it learns."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from stimuli import oriented_bars

from snnrsa.config import ConfigError
from snnrsa.model.network import Network
from snnrsa.rules import make_rule
from snnrsa.rules.stdp import STDP
from snnrsa.rules.stdp.analysis import orientation_selectivity
from snnrsa.rules.stdp.functional import convergence, learning_rates, spike_train

from conftest import typed_cfg

BASE = [
    "rule=stdp",
    "neuron=snntorch_lif",
    "encoding=latency",
    "neuron.time_steps=6",
    "backbone.fc_units=[8]",
    "rsa.layers=[conv1]",
    "rule.threshold_mode=fixed",
]


def make(overrides: list[str], n_classes: int = 4) -> STDP:
    cfg = typed_cfg([*BASE, *overrides])
    torch.manual_seed(0)
    net = Network(cfg, n_classes)
    return make_rule(cfg.rule, net, 1)


def reference_delta(
    pre: torch.Tensor,
    w: torch.Tensor,
    threshold: float,
    beta: float,
    pointwise: bool,
    k: int,
    radius: int,
    a_plus: float,
    a_minus: float,
    reduce: str,
    gain: torch.Tensor | None = None,
) -> torch.Tensor:
    """One image at a time with explicit loops: IF/LIF first spikes, pointwise inhibition,
    k-WTA, and the soft-bounded update, reduced over the batch like the batched rule.
    ``gain`` (homeostatic offsets) scales each feature's potential."""
    t_steps, n_img = pre.shape[:2]
    c_out, c_in, ks, _ = w.shape
    pad = ks // 2
    ltp = torch.zeros(w.shape, dtype=torch.float64)
    events = torch.zeros(c_out, dtype=torch.float64)
    for b in range(n_img):
        cur = F.conv2d(pre[:, b].double(), w.double(), padding=pad)  # [T, C, H, W]
        if gain is not None:
            cur = cur * gain.double().view(-1, 1, 1)
        v = torch.zeros_like(cur)
        acc = torch.zeros_like(cur[0])
        for t in range(t_steps):
            acc = beta * acc + cur[t]
            v[t] = acc
        _, h, wd = cur.shape[1:]
        t_post = torch.full((c_out, h, wd), t_steps, dtype=torch.long)
        v_post = torch.zeros(c_out, h, wd, dtype=torch.float64)
        for c in range(c_out):
            for y in range(h):
                for x in range(wd):
                    for t in range(t_steps):
                        if v[t, c, y, x] >= threshold:
                            t_post[c, y, x], v_post[c, y, x] = t, v[t, c, y, x]
                            break
        if pointwise:
            for y in range(h):
                for x in range(wd):
                    best = 0
                    for c in range(1, c_out):
                        if (t_post[c, y, x], -v_post[c, y, x]) < (t_post[best, y, x], -v_post[best, y, x]):
                            best = c
                    for c in range(c_out):
                        if c != best:
                            t_post[c, y, x] = t_steps
        avail = t_post < t_steps
        t_pre = torch.full((c_in, h + 2 * pad, wd + 2 * pad), t_steps, dtype=torch.long)
        fired = pre[:, b].cumsum(0).clamp(max=1).sum(0).long()
        t_pre[:, pad : pad + h, pad : pad + wd] = t_steps - fired
        for _ in range(k):
            best = None
            for c in range(c_out):
                for y in range(h):
                    for x in range(wd):
                        if avail[c, y, x] and (
                            best is None
                            or (t_post[c, y, x], -v_post[c, y, x]) < (t_post[best], -v_post[best])
                        ):
                            best = (c, y, x)
            if best is None:
                break
            c, y, x = best
            events[c] += 1
            ltp[c] += (t_pre[:, y : y + ks, x : x + ks] <= t_post[c, y, x]).double()
            avail[c] = False
            avail[:, max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1] = False
    drive = a_plus * ltp - a_minus * (events.view(-1, 1, 1, 1) - ltp)
    if reduce == "mean":
        drive = drive / events.clamp(min=1).view(-1, 1, 1, 1)
    wd64 = w.double()
    return (wd64 + wd64 * (1 - wd64) * drive).clamp(0, 1) - wd64


@pytest.mark.parametrize(
    "extra",
    [
        ["rule.reduce=sum", "rule.beta=1.0"],
        ["rule.reduce=mean", "rule.beta=0.8", "rule.pointwise_inhibition=false"],
        ["rule.reduce=sum", "rule.beta=1.0", "rule.homeostasis_rate=0.1"],
    ],
)
@pytest.mark.parametrize("layer", [0, 1])
def test_batched_equals_per_image_reference(extra: list[str], layer: int) -> None:
    rule = make(
        [
            "backbone.channels=[4,6]",
            "backbone.kernel_size=3",
            "rule.k_winners=[3,2]",
            "rule.inhibition_radius=[1,1]",
            "rule.thresholds=[0.15,0.1]",
            "rule.init_std=0.2",
            "rule.ramp_every=2",
            *extra,
        ]
    )
    images = torch.rand(5, 3, 12, 12)
    block = rule.net.backbone.blocks[layer]
    if rule.cfg.homeostasis_rate > 0:  # per-feature gains in both the rule and the reference
        block.neuron.offset.copy_(torch.linspace(-0.3, 0.3, len(block.neuron.offset)))
    rule.seen[layer] = 4  # past two ramp doublings: the reference must use the ramped rates
    a_plus, a_minus = learning_rates(rule.cfg, 4)
    assert a_plus == pytest.approx(4 * rule.cfg.a_plus)
    pre = spike_train(rule.layer_io(images, layer).t_pre, rule.time_steps, torch.float32)
    w0 = block.conv.weight.clone()
    expected = reference_delta(
        pre,
        w0,
        float(block.neuron.threshold),
        rule.cfg.beta,
        rule.cfg.pointwise_inhibition,
        rule.cfg.k_winners[layer],
        rule.cfg.inhibition_radius[layer],
        a_plus,
        a_minus,
        rule.cfg.reduce,
        block.neuron.gain(),
    )
    seen = rule.update(images, layer)
    assert int(seen["events"].sum()) > 2 * len(images) // 2  # winners were actually found
    assert expected.abs().max() > 1e-4
    torch.testing.assert_close((block.conv.weight - w0).double(), expected, atol=1e-6, rtol=0)


def test_at_most_one_spike_per_neuron_through_the_network() -> None:
    rule = make(["backbone.channels=[4,6]", "rule.thresholds=[0.1,0.05]", "rule.layer_images=[64]"])
    images = torch.rand(8, 3, 16, 16)
    _, outputs = rule.net.run(images)
    for name in ("conv1", "conv2"):
        counts = outputs[name].sum(0)
        assert counts.max() <= 1 and counts.sum() > 0, name
    # per position only one feature fires (pointwise inhibition), before pooling
    io = rule.layer_io(images, 0)
    assert (io.t_post < rule.time_steps).sum(1).max() <= 1


def test_config_rejects_analog_input_and_bad_settings() -> None:
    with pytest.raises(ConfigError, match="encoding=analog"):
        typed_cfg(["rule=stdp", "backbone.fc_units=[8]"])
    for bad, match in (
        ("rule.reduce=max", "rule.reduce"),
        ("rule.threshold_mode=auto", "threshold_mode"),
        ("rule.threshold_quantiles=[1.5]", "threshold_quantiles"),
        ("rule.one_spike=false", "pointwise_inhibition"),
        ("rule.homeostasis_rate=-0.1", "homeostasis_rate"),
        ("rule.homeostasis_max=1.0", "homeostasis_max"),
        ("rule.homeostasis_max=0", "homeostasis_max"),
    ):
        with pytest.raises(ConfigError, match=match):
            typed_cfg([*BASE, bad])


def test_learns_orientation_selective_conv1() -> None:
    """Bars at 4 orientations: Conv1 kernels become oriented, C falls, weights stay in [0, 1],
    every feature wins sometimes and none wins everything; then the next layer takes over."""
    torch.set_num_threads(1)
    n = 1600
    rule = make(
        [
            "backbone.channels=[8,8]",
            "backbone.kernel_size=5",
            "rule.thresholds=[0.3]",
            "rule.k_winners=[4]",
            "rule.inhibition_radius=[2]",
            "rule.ramp_every=160",
            f"rule.layer_images=[{n},64]",
        ]
    )
    x, y = oriented_bars(n + 64, 20, seed=1)
    w = rule.weights[0]
    osi0, c0 = orientation_selectivity(w).mean(), convergence(w)
    for i in range(0, n + 64, 64):
        rule.train_batch(x[i : i + 64], y[i : i + 64])
    osi, c = orientation_selectivity(w).mean(), convergence(w)
    assert osi > osi0 + 0.15, (osi0, osi)
    assert c < 0.2 * c0, (c0, c)
    assert 0 <= float(w.min()) and float(w.max()) <= 1
    use = rule.usage(0)
    assert use["never_won"] == 0 and use["max_share"] < 0.4, use
    assert rule.done and rule.rows[-1]["layer"] == 1 and rule.seen[1] == 64
    assert rule.train_batch(x[:64], y[:64]) == (0.0, 0) and rule.seen[1] == 64  # schedule over
    assert [r["C"] for r in rule.rows if r["layer"] == 0][-1] == pytest.approx(c)
    state = rule.state_dict()
    other = make(["backbone.channels=[8,8]", "backbone.kernel_size=5"])
    other.load_state_dict(state)
    assert other.done and torch.equal(other.wins[0], rule.wins[0])


@pytest.mark.parametrize("homeostasis", [False, True])
@pytest.mark.parametrize("kernel", [3, 5])
def test_fast_path_equals_the_time_expanded_path(kernel: int, homeostasis: bool) -> None:
    """``pointwise_first_spikes`` (bisection-free backward search on receptive fields, no
    ``[T, ...]`` tensors) gives every layer the same first spikes, survivors and potentials as
    the conv over all T cumulative frames followed by ``FirstSpikeNeuron.fire``."""
    rule = make(
        [
            "backbone.channels=[6,8,10]",
            f"backbone.kernel_size={kernel}",
            "rule.thresholds=[0.12,0.06,0.05]",
            "rule.init_std=0.2",
            "rsa.layers=[conv1,conv2,conv3]",
            f"rule.homeostasis_rate={0.1 if homeostasis else 0.0}",
        ]
    )
    if homeostasis:  # per-feature gains: both paths must apply the same offsets
        gen = torch.Generator().manual_seed(3)
        for b in rule.net.backbone.blocks:
            b.neuron.offset.uniform_(-0.4, 0.4, generator=gen)
    images = torch.rand(6, 3, 16, 16)
    fast = rule.all_io(images)
    assert all(io.survivors is not None for io in fast)
    rule.fast_path = False
    slow = rule.all_io(images)
    for a, b in zip(fast, slow):
        assert b.survivors is None and (b.t_post < rule.time_steps).any()
        assert torch.equal(a.t_pre, b.t_pre)
        assert torch.equal(a.t_post, b.t_post)
        # gains scale the kernels in one path and the potentials in the other: float rounding
        torch.testing.assert_close(a.v_post, b.v_post, atol=1e-5, rtol=1e-6)
        assert a.fired_share() == pytest.approx(b.fired_share())


def test_study_network_conv1_learns_oriented_filters_with_default_settings() -> None:
    """The study's Conv1 (32 features, 3x3) with the default rule settings (adaptive thresholds,
    k-WTA, learning-rate ramp) on 4 bar orientations: kernels become oriented, C falls, weights stay
    in [0, 1], nearly every feature wins and none takes most wins."""
    torch.set_num_threads(1)
    n = 4096
    cfg = typed_cfg(
        [
            "rule=stdp",
            "neuron=snntorch_lif",
            "encoding=latency",
            "neuron.time_steps=8",
            "rsa.layers=[conv1]",
            f"rule.layer_images=[{n},64,64]",
        ]
    )
    torch.manual_seed(0)
    rule = make_rule(cfg.rule, Network(cfg, 4), 1)
    x, y = oriented_bars(n, 32, seed=1)
    w = rule.weights[0]
    osi0, c0 = orientation_selectivity(w).mean(), convergence(w)
    for i in range(0, n, 128):
        rule.train_batch(x[i : i + 128], y[i : i + 128])
    assert rule.layer == 1
    assert orientation_selectivity(w).mean() > osi0 + 0.1
    assert convergence(w) < 0.3 * c0
    assert 0 <= float(w.min()) and float(w.max()) <= 1
    use = rule.usage(0)
    assert use["never_won"] <= 0.1 and use["max_share"] < 0.3, use


def test_homeostasis_lets_never_winning_features_win() -> None:
    """Conv1 on bars with few winners and a wide inhibition radius: without homeostasis some
    features never win; with per-feature threshold offsets (gains) fewer do. The offsets stay within their
    bounds, are frozen once the layer's training ends, and travel in the rule's state_dict."""
    torch.set_num_threads(1)
    n = 1024
    opts = [
        "backbone.channels=[16,8]",
        "backbone.kernel_size=5",
        "rule.thresholds=[0.3]",
        "rule.k_winners=[2]",
        "rule.inhibition_radius=[3]",
        "rule.ramp_every=128",
        "rule.init_std=0.1",
        f"rule.layer_images=[{n},64]",
    ]
    x, y = oriented_bars(n + 64, 20, seed=1)
    usage = {}
    for rate in (0.0, 0.05):
        rule = make([*opts, f"rule.homeostasis_rate={rate}"])
        for i in range(0, n, 64):
            rule.train_batch(x[i : i + 64], y[i : i + 64])
        usage[rate] = rule.usage(0)
    assert usage[0.0]["never_won"] > 0, usage
    assert usage[0.05]["never_won"] < usage[0.0]["never_won"], usage
    offset = rule.net.backbone.blocks[0].neuron.offset
    assert offset.abs().max() <= rule.cfg.homeostasis_max and offset.abs().max() > 0
    frozen = offset.clone()
    rule.train_batch(x[n:], y[n:])  # conv2 trains now: conv1's offsets stay
    assert torch.equal(offset, frozen) and rule.layer == 2
    other = make([*opts, "rule.homeostasis_rate=0.05"])
    other.load_state_dict(rule.state_dict())
    assert torch.equal(other.net.backbone.blocks[0].neuron.offset, frozen)

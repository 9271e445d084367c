"""Canonical conv STDP (Kheradpisheh et al. 2018 as SpykeTorch runs it): the rank-order code, first
spikes, the batched update against a plain per-image reference, and what it learns."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from stimuli import oriented_bars

from snnrsa.config import ConfigError
from snnrsa.rules import build_network, make_rule
from snnrsa.rules.stdp import STDP
from snnrsa.rules.stdp.analysis import orientation_selectivity
from snnrsa.rules.stdp.fast import if_first_spikes
from snnrsa.rules.stdp.functional import convergence, cumulative_frames, learning_rates, pointwise_mask
from snnrsa.rules.stdp.modules import rank_order_times, recipe_dog_kernels

from conftest import typed_cfg

SMALL = ["rule=stdp", "backbone.fc_units=[8]", "rsa.layers=[conv1]"]


def make(overrides: list[str], n_classes: int = 4, seed: int = 0) -> STDP:
    cfg = typed_cfg([*SMALL, *overrides])
    torch.manual_seed(seed)
    return make_rule(cfg.rule, build_network(cfg, n_classes), 1)


@pytest.mark.parametrize("rule", ["stdp", "stdp_trace", "stdp_published"])
def test_rule_blocks_are_built_with_the_network(rule: str) -> None:
    """A rule's own blocks exist once the network is built (no rule swaps modules in afterwards):
    the same modules before and after the rule binds, and a network built without the rule's
    blocks is refused, naming ``build_network``."""
    extra = ["neuron=snntorch_lif", "encoding=latency"] if rule != "stdp_published" else []
    cfg = typed_cfg([f"rule={rule}", *extra])
    torch.manual_seed(0)
    net = build_network(cfg, 4)
    before = [m for b in net.backbone.blocks for m in (b.conv, b.bn, b.neuron, b.pool)]
    encoder = net.encoder
    weights = [b.conv.weight.clone() for b in net.backbone.blocks]
    make_rule(cfg.rule, net, 1)
    after = [m for b in net.backbone.blocks for m in (b.conv, b.bn, b.neuron, b.pool)]
    assert all(x is y for x, y in zip(before, after)) and net.encoder is encoder
    assert all(torch.equal(w, b.conv.weight) for w, b in zip(weights, net.backbone.blocks))
    assert not any(b.conv.weight.requires_grad for b in net.backbone.blocks)
    if rule != "stdp_published":
        assert all(type(b.bn) is torch.nn.Identity for b in net.backbone.blocks)
        assert net.backbone.blocks[0].conv.in_channels == 2  # DoG on/off maps
    from snnrsa.model.network import Network

    with pytest.raises(ValueError, match=f"rule={rule} needs the network built for it.*build_network"):
        make_rule(cfg.rule, Network(cfg, 4), 1)
    bp = typed_cfg(["rule=bp"])
    with pytest.raises(ValueError, match="rule=bp needs the network built for it"):
        make_rule(bp.rule, net, 1)


def test_shipped_defaults_are_the_recipe() -> None:
    """The values of SpykeTorch's KheradpishehDeep.py, and the study's network still selectable."""
    cfg = typed_cfg(["rule=stdp"])
    r, b = cfg.rule, cfg.backbone
    assert (r.coding, r.time_steps, r.threshold_mode) == ("rank_order", 15, "fixed")
    assert r.threshold_unit == "potential"
    assert r.thresholds[:2] == [10.0, 1.0] and r.k_winners[:2] == [5, 8] and r.inhibition_radius[:2] == [2, 1]
    assert (r.a_plus, r.a_minus, r.a_plus_max, r.ramp_every, r.ramp_layers) == (0.004, 0.003, 0.15, 500, [0])
    assert r.homeostasis_tau == 0 and r.pointwise_inhibition == "learning" and r.layer_images[0] == 120000
    assert b.kernel_sizes[:2] == [5, 2] and b.padding[:2] == [2, 1] and b.pool_padding == 1
    assert b.channels[:2] == [32, 150]
    assert r.input_size == cfg.data.image_size  # the DoG front end's retina: the training size
    assert learning_rates(r, 499, 0) == (0.004, 0.003)
    assert learning_rates(r, 500, 0) == pytest.approx((0.008, 0.006))
    assert learning_rates(r, 10**6, 0) == pytest.approx((0.15, 0.1125))
    assert learning_rates(r, 10**6, 1) == (0.004, 0.003)  # no ramp beyond conv1
    study = typed_cfg(["rule=stdp", "backbone=study"]).backbone
    assert study.kernel_size == 3 and study.kernel_sizes == [] and study.pool_padding == 0


def test_rank_order_times_are_equal_count_bins_of_the_sorted_values() -> None:
    """SpykeTorch's Intensity2Latency, re-derived per image with a Python sort."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 7, 5, generator=gen)
    x[x < 0.3] = 0.0
    x[2] = 0.0
    x[2, 0, 0, :3] = torch.tensor([0.5, 0.9, 0.1])  # fewer values than bins: one per bin
    t_steps = 4
    got = rank_order_times(x, t_steps)
    for b in range(3):
        flat = x[b].flatten().tolist()
        nz = sorted((i for i, v in enumerate(flat) if v > 0), key=lambda i: (-flat[i], i))
        size = max(len(nz) // t_steps, 1)
        want = [t_steps] * len(flat)
        for rank, i in enumerate(nz):
            if rank // size < t_steps:
                want[i] = rank // size
        assert got[b].flatten().tolist() == want
    assert got[2, 0, 0, :3].tolist() == [1, 0, 2]


def test_recipe_dog_kernels_are_zero_mean_unit_max_on_and_off_centre() -> None:
    k = recipe_dog_kernels([1.0, 2.0], 7).double()
    assert k.shape == (2, 1, 7, 7)
    torch.testing.assert_close(k.mean((1, 2, 3)), torch.zeros(2, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(k.amax((1, 2, 3)), torch.ones(2, dtype=torch.float64))
    assert k[0, 0, 3, 3] == 1.0 and k[1, 0, 3, 3] < 0  # on-centre, off-centre


@pytest.mark.parametrize(("kernel", "padding"), [(5, 2), (2, 1), (3, 0)])
def test_fast_first_spikes_equal_the_time_expanded_conv(kernel: int, padding: int) -> None:
    """``if_first_spikes`` against the IF membrane from convs of the cumulative input frames
    (float64 on both sides: the same sums, no rounding ties)."""
    gen = torch.Generator().manual_seed(kernel)
    t_steps, c_in, c_out = 6, 3, 5
    t_in = torch.randint(0, t_steps + 3, (4, c_in, 9, 8), generator=gen).clamp(max=t_steps)
    w = torch.rand(c_out, c_in, kernel, kernel, generator=gen, dtype=torch.float64)
    th = torch.tensor(0.35 * c_in * kernel * kernel, dtype=torch.float64)
    t_fast, v_fast = if_first_spikes(t_in, w, padding, th, t_steps)
    v = torch.stack(
        [F.conv2d(f, w, padding=padding) for f in cumulative_frames(t_in, t_steps, 1.0, torch.float64)]
    )
    above = v >= th
    want_t = torch.where(above.any(0), above.double().argmax(0), torch.tensor(t_steps)).long()
    want_v = (
        v.gather(0, want_t.clamp(max=t_steps - 1).unsqueeze(0)).squeeze(0).masked_fill(want_t == t_steps, 0)
    )
    assert torch.equal(t_fast, want_t) and 0 < float((want_t < t_steps).double().mean()) < 1
    torch.testing.assert_close(v_fast, want_v)
    keep = pointwise_mask(want_t, want_v, t_steps)  # the per-position survivors only
    t_pw, v_pw = if_first_spikes(t_in, w, padding, th, t_steps, pointwise=True)
    assert torch.equal(t_pw, want_t.masked_fill(~keep, t_steps)) and (keep.sum(1) == 1).any()
    torch.testing.assert_close(v_pw, want_v.masked_fill(~keep, 0))


def reference_step(
    t_pre: torch.Tensor,
    w: torch.Tensor,
    threshold: float,
    k: int,
    radius: int,
    padding: int,
    t_steps: int,
    rates: list[tuple[float, float]],
) -> torch.Tensor:
    """One image at a time with explicit loops: IF first spikes (no reset), pointwise inhibition,
    k-WTA (earliest spike, then larger potential, then lower flat index), the recipe's pre <= post
    pairing, and the soft bound integrated per event: logit(w) += ±a of that image."""
    c_out, c_in, ks, _ = w.shape
    logit = torch.logit(w.double().clamp(1e-6, 1 - 1e-6))
    for b in range(len(t_pre)):
        pre = F.pad(t_pre[b], (padding,) * 4, value=t_steps)
        h, wd = pre.shape[1] - ks + 1, pre.shape[2] - ks + 1
        best: dict[tuple[int, int], tuple[int, float, int]] = {}  # position -> (t, -v, c)
        for c in range(c_out):
            for y in range(h):
                for x in range(wd):
                    field = pre[:, y : y + ks, x : x + ks]
                    for t in range(t_steps):
                        v = float((w[c].double() * (field <= t)).sum())
                        if v >= threshold:
                            cand = (t, -v, c)
                            if (y, x) not in best or cand < best[(y, x)]:
                                best[(y, x)] = cand
                            break
        avail = {pos: val for pos, val in best.items()}
        for _ in range(k):
            if not avail:
                break
            (y, x), (t, _, c) = min(
                avail.items(),
                key=lambda kv: (kv[1][0], kv[1][1], kv[1][2] * h * wd + kv[0][0] * wd + kv[0][1]),
            )
            a_plus, a_minus = rates[b]
            ltp = pre[:, y : y + ks, x : x + ks] <= t
            logit[c] += torch.where(ltp, a_plus, -a_minus).double()
            avail = {
                pos: val
                for pos, val in avail.items()
                if val[2] != c and not (abs(pos[0] - y) <= radius and abs(pos[1] - x) <= radius)
            }
    return torch.sigmoid(logit)


@pytest.mark.parametrize("layer", [0, 1])
def test_batched_update_equals_per_image_reference(layer: int) -> None:
    """The rule's batched step (ramp moving within the batch) on each layer of the recipe network."""
    rule = make(
        ["backbone.channels=[4,6]", "rule.ramp_every=2", "rule.thresholds=[6.0,1.0]", "rule.init_std=0.2"]
    )
    images, _ = oriented_bars(6, 12, seed=3)
    block = rule.net.backbone.blocks[layer]
    rule.seen[layer] = 3  # ramp doublings inside the batch
    io = rule.layer_io(images, layer)
    w0 = block.conv.weight.clone()
    rates = [learning_rates(rule.cfg, 3 + i, layer) for i in range(len(images))]
    want = reference_step(
        io.t_pre,
        w0,
        float(block.neuron.threshold),
        rule.cfg.k_winners[layer],
        rule.cfg.inhibition_radius[layer],
        block.conv.padding[0],
        rule.time_steps,
        rates,
    )
    rule.update(images, layer)
    assert not torch.equal(block.conv.weight, w0)
    torch.testing.assert_close(block.conv.weight.double(), want, atol=1e-5, rtol=0)


def test_pointwise_inhibition_acts_only_while_learning() -> None:
    rule = make(["backbone.channels=[8,6]"])
    images, _ = oriented_bars(8, 16, seed=1)
    learning = rule.layer_io(images, 0)
    assert (learning.t_post < rule.time_steps).sum(1).max() == 1
    evaluation = rule.all_io(images)[0]
    assert (evaluation.t_post < rule.time_steps).sum(1).max() > 1
    _, outputs = rule.net.run(images)  # the network read out for RSA: evaluation mode
    assert outputs["conv1"].sum(0).max() == 1  # still at most one spike per unit
    t_eval = evaluation.t_post
    pooled = (-F.max_pool2d(-t_eval.float(), 2, padding=1)).long()
    fired = outputs["conv1"].sum(0) > 0
    assert torch.equal(fired, pooled < rule.time_steps)


def test_signature_on_oriented_bars_at_the_shipped_defaults() -> None:
    """The recipe at its defaults (5x5 conv1 on DoG rank-order spikes) learns oriented kernels
    from bars: orientation index >= 0.5 (random kernels about 0.2), C < 0.01, every feature wins,
    none takes more than 4x its fair share."""
    rule = make([])
    w = rule.weights[0]
    osi0 = orientation_selectivity(torch.rand_like(w)).mean()
    x, y = oriented_bars(4096, rule.cfg.input_size, seed=1)  # at the training resolution
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matmuls: one thread is faster on a loaded machine
    try:
        for i in range(0, len(x), 128):
            rule.train_batch(x[i : i + 128], y[i : i + 128])
    finally:
        torch.set_num_threads(threads)
    osi, c, use = orientation_selectivity(w).mean(), convergence(w), rule.usage(0)
    assert osi >= 0.5 and osi0 < 0.35, (osi, osi0)
    assert c < 0.01 and 0 <= float(w.min()) and float(w.max()) <= 1
    assert use["never_won"] == 0 and use["max_share"] < 4 / w.shape[0], use
    assert rule.seen[0] == 4096 and not rule.done and math.isnan(rule.train_batch(x[:8], y[:8])[0])


def test_a_224_px_evaluation_fires_as_the_training_resolution_does() -> None:
    """The DoG front end resamples to its fixed retina (``rule.input_size``, by default the
    training images' size), so a 224-px evaluation of the training pictures fires every layer as
    the 32-px pictures do; as given (``input_size=null``), the DoG responses of the upsampled
    pictures fall below the drop threshold and conv1 goes nearly silent."""
    rule = make([])
    size = rule.cfg.input_size
    x, y = oriented_bars(1024, size, seed=3)
    for i in range(0, len(x), 128):
        rule.train_batch(x[i : i + 128], y[i : i + 128])
    test = x[:16]
    big = F.interpolate(test, size=(224, 224), mode="bilinear", align_corners=False)
    rates = [io.fired_share()[0] for io in rule.all_io(test)]
    rates_224 = [io.fired_share()[0] for io in rule.all_io(big)]
    assert min(rates) > 0.01, rates
    assert rates_224 == pytest.approx(rates, rel=0.2, abs=0.01)
    rule.net.encoder.input_size = None
    as_given = rule.all_io(big)[0].fired_share()[0]
    assert as_given < 0.5 * rates[0], (as_given, rates[0])


def test_features_read_fc_as_current_and_conv_as_latency() -> None:
    rule = make(["backbone.channels=[8,6]", "rule.feature_code=latency"])
    assert typed_cfg(["rule=stdp"]).rule.feature_code == "potential"
    images, _ = oriented_bars(6, 16, seed=2)
    f = rule.features(images, ["conv1", "fc1"])
    fc = rule.net.backbone.fcs[0]
    assert f["fc1"].shape == (6, 8) and float(f["fc1"].std(0).min()) > 0
    _, outputs = rule.net.run(images)
    x = F.adaptive_avg_pool2d(outputs["conv2"].mean(0), 4).flatten(1)
    torch.testing.assert_close(f["fc1"], fc.linear(x))
    t = rule.all_io(images)[0].t_post
    pooled = -F.max_pool2d(-t.float(), 2, padding=1)
    want = ((rule.time_steps - pooled) / rule.time_steps).mean((2, 3))
    torch.testing.assert_close(f["conv1"], want)


def test_config_rejects_bad_settings() -> None:
    for override, key in [
        ("rule.batch_update=max", "rule.batch_update"),
        ("rule.threshold_mode=auto", "threshold_mode"),
        ("rule.threshold_quantiles=[1.5]", "threshold_quantiles"),
        ("rule.one_spike=false", "pointwise_inhibition"),
        ("rule.homeostasis_tau=-1", "homeostasis_tau"),
        ("rule.homeostasis_max=1.0", "homeostasis_max"),
        ("rule.layer_images=[0]", "layer_images"),
        ("rule.input_size=4", "rule.input_size=4 must be null"),
    ]:
        with pytest.raises(ConfigError, match=key):
            typed_cfg(["rule=stdp", override])
    with pytest.raises(ConfigError, match="encoding=analog"):
        typed_cfg(["rule=stdp", "rule.coding=encoding"])


def test_homeostasis_time_constant_is_in_images() -> None:
    """Offsets after 256 images are the same in one batch of 256 as in 4 of 64 when the win
    shares are the same (a rate per image, not per batch)."""
    one, four = make(["rule.homeostasis_tau=512"]), make(["rule.homeostasis_tau=512"])
    events = torch.arange(32, dtype=torch.float32)
    neuron_one, neuron_four = one.net.backbone.blocks[0].neuron, four.net.backbone.blocks[0].neuron
    one.homeostasis(neuron_one, events, 256)
    for _ in range(4):
        four.homeostasis(neuron_four, events, 64)
    torch.testing.assert_close(neuron_one.offset, neuron_four.offset)
    assert float(neuron_one.offset.abs().max()) > 0.1


def matched_correlations(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson r of each kernel of ``a`` with its partner in ``b`` under the one-to-one matching
    that maximises the summed r (Hungarian, scipy)."""
    from scipy.optimize import linear_sum_assignment

    def unit(w: torch.Tensor) -> torch.Tensor:
        z = w.flatten(1).double()
        z = z - z.mean(1, keepdim=True)
        return z / z.norm(dim=1, keepdim=True)

    r = (unit(a) @ unit(b).t()).numpy()
    rows, cols = linear_sum_assignment(-r)
    return torch.from_numpy(r[rows, cols])


def test_batch_128_learns_the_kernels_of_image_by_image_learning() -> None:
    """The same 768 bar images, one at a time vs in batches of 128, at the shipped defaults: every
    conv1 kernel of the batched run has a partner in the per-image run with r >= 0.9. (Run to
    convergence, per-image learning is itself order-chaotic: two per-image runs over the same
    3,072 images in two orders match at r 0.82 mean, 0.22 minimum; batch 128 against per-image
    0.88 / 0.08, so the comparison stops while the ramp is still rising.)"""
    x, y = oriented_bars(768, 20, seed=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = []
        for batch in (1, 128):
            rule = make([])
            for i in range(0, len(x), batch):
                rule.train_batch(x[i : i + batch], y[i : i + batch])
            runs.append(rule)
    finally:
        torch.set_num_threads(threads)
    one, batched = runs
    assert one.seen[0] == batched.seen[0] == 768 and convergence(one.weights[0]) < 0.2
    r = matched_correlations(one.weights[0], batched.weights[0])
    assert float(r.min()) >= 0.9, sorted(r.tolist())[:4]
    init = make([]).weights[0]  # not trivially: the kernels moved away from their start
    assert float(matched_correlations(init, one.weights[0]).mean()) < 0.95


def test_potential_read_out_is_defined_where_spike_read_outs_are_constant() -> None:
    """At the initial weights conv2 (threshold 1) fires wherever two inputs spiked, in every
    feature at once: its spike counts are the same for every feature (a constant pattern, NaN
    rho); the shipped potential read-out (sum of w over the inputs that spiked) is not."""
    rule = make(["backbone.channels=[8,12]", "rsa.layers=[conv1,conv2]"])
    images, _ = oriented_bars(6, 16, seed=4)
    counts = make(["backbone.channels=[8,12]", "rule.feature_code=count"]).features(images, ["conv2"])[
        "conv2"
    ]
    assert int((counts.amax(1) == counts.amin(1)).sum()) > 0  # constant patterns
    f = rule.features(images, ["conv1", "conv2"])
    io = rule.all_io(images)[1]
    b = rule.net.backbone.blocks[1]
    want = F.conv2d((io.t_pre < rule.time_steps).float(), b.conv.weight, padding=1).mean((2, 3))
    torch.testing.assert_close(f["conv2"], want)
    assert float((f["conv2"].amax(1) - f["conv2"].amin(1)).min()) > 0

"""The RSA step of the run loop against scipy, BatchNorm mode switching, firing statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.spatial.distance import pdist, squareform
from scipy.stats import spearmanr

from snnrsa.brain import Brain
from snnrsa.rsa import correlation_rdm
from snnrsa.rules import build_network, make_rule
from snnrsa.run.evaluation import (
    EvalSet,
    extract_features,
    firing_stats,
    held_out_subset,
    model_rdm,
    noise_ceilings,
    score_checkpoint,
    set_mode,
)

from conftest import typed_cfg


def test_rsa_step_agrees_with_scipy() -> None:
    rng = np.random.default_rng(0)
    n = 30
    feats = {"conv1": rng.normal(size=(n, 50)), "fc1": rng.normal(size=(n, 7))}
    brain_pats = [rng.normal(size=(n, 40)) for _ in range(2)]
    brain = Brain(["sub-01", "sub-02"], [f"s{i}" for i in range(n)], [[]] * n,
                  {"V1": np.stack([correlation_rdm(p) for p in brain_pats])},
                  np.zeros((2, n), int), np.zeros((2, n), int))
    model = {k: correlation_rdm(v) for k, v in feats.items()}
    for k, v in feats.items():
        np.testing.assert_allclose(model[k], squareform(pdist(v, "correlation")), atol=1e-10)
    np.testing.assert_allclose(brain.rdms["V1"][1], squareform(pdist(brain_pats[1],
                                                                     "correlation")), atol=1e-10)
    rows = score_checkpoint(model, brain)
    assert len(rows) == 4
    for row in rows:
        s = brain.subjects.index(row["subject"])
        ref = spearmanr(pdist(feats[row["layer"]], "correlation"),
                        pdist(brain_pats[s], "correlation"))[0]
        assert abs(row["rho"] - ref) < 1e-10


def test_features_are_averaged_over_a_conditions_images() -> None:
    cfg = typed_cfg(["backbone.channels=[4,8,8]", "backbone.fc_units=[16]"])
    net = build_network(cfg, 10).eval()
    imgs = torch.rand(5, 3, 32, 32)
    groups = [[0], [1, 2], [3, 4]]
    rule = make_rule(cfg.rule, net, 1)
    out = extract_features(rule, imgs, groups, ["conv2", "fc1"], 2, torch.device("cpu"))
    with torch.no_grad():
        ref = net.features(imgs, ["conv2"])["conv2"].double()
    np.testing.assert_allclose(out["conv2"][1], ref[1:3].mean(0).numpy(), rtol=1e-6)
    assert out["fc1"].shape == (3, 16)


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_bn_mode_at_evaluation(bn_mode: str) -> None:
    cfg = typed_cfg(["backbone.dropout=0.3"])
    net = build_network(cfg, 10)
    set_mode(net, False, bn_mode)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    drops = [m for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    assert all(m.training == (bn_mode == "train") for m in bns)
    assert drops and not any(m.training for m in drops)
    set_mode(net, True)
    assert all(m.training for m in net.modules())


def test_silent_layer_scores_nan_instead_of_crashing() -> None:
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(6, 4))
    feats[2] = 0.0  # a stimulus for which the layer never spikes
    rdm = model_rdm("conv3", feats)
    assert np.isnan(rdm).all()
    brain = Brain(["sub-01"], [f"s{i}" for i in range(6)], [[]] * 6,
                  {"V1": correlation_rdm(rng.normal(size=(6, 5)))[None]},
                  np.zeros((1, 6), int), np.zeros((1, 6), int))
    rows = score_checkpoint({"conv3": rdm, "fc1": correlation_rdm(rng.normal(size=(6, 3)))},
                            brain)
    assert np.isnan(rows[0]["rho"]) and np.isfinite(rows[1]["rho"])


def test_cross_fmri_run_pairs_mask_is_applied() -> None:
    rng = np.random.default_rng(2)
    n = 12
    sessions = np.ones((2, n), int)
    runs = np.stack([np.arange(n) % 3 + 1, np.arange(n) % 4 + 1])
    brain = Brain(["sub-01", "sub-02"], [f"s{i}" for i in range(n)], [[]] * n,
                  {"V1": np.stack([correlation_rdm(rng.normal(size=(n, 9))) for _ in range(2)])},
                  sessions, runs)
    mask = brain.cross_fmri_run_pairs()
    i, j = 0, 3  # same run for sub-01 (1, 1), different for sub-02 (1, 4): excluded
    assert not mask[i, j] and mask[0, 1] and not mask.diagonal().any()
    model = {"conv1": correlation_rdm(rng.normal(size=(n, 5)))}
    row = score_checkpoint(model, brain, mask)[1]
    iu = np.triu_indices(n, 1)
    keep = mask[iu]
    ref = spearmanr(model["conv1"][iu][keep], brain.rdms["V1"][1][iu][keep])[0]
    assert abs(row["rho"] - ref) < 1e-12
    averaged = Brain(brain.subjects, brain.stimuli, brain.image_paths, brain.rdms,
                     np.full((2, n), -1), np.full((2, n), -1))
    with pytest.raises(ValueError, match="session and run"):
        averaged.cross_fmri_run_pairs()


class _Replay:
    """A stand-in network whose ``run`` returns fixed spike trains ``[T, B, ...]`` per image."""

    def __init__(self, trains: dict[str, torch.Tensor]) -> None:
        self.trains = trains

    def run(self, images: torch.Tensor):
        idx = images[:, 0, 0, 0].long()
        return None, {name: t[:, idx] for name, t in self.trains.items()}


def test_firing_stats_count_rates_silent_units_and_silent_stimuli() -> None:
    # 5 stimuli, T = 4; conv: 2 channels x 2 x 2 map (8 units), fc: 3 units
    conv = torch.zeros(4, 5, 2, 2, 2)
    conv[0, 0, 0, 0, 0] = 1.0  # stimulus 0: one spike of unit (0, 0, 0)
    conv[:, 3, 1, 1, 1] = 1.0  # stimulus 3: unit (1, 1, 1) fires at every step
    fc = torch.zeros(4, 5, 3)
    fc[1:3, :, 2] = 1.0  # unit 2 fires twice for every stimulus; units 0, 1 never
    images = torch.arange(5.0).view(5, 1, 1, 1).expand(5, 3, 1, 1)
    net = _Replay({"conv1": conv, "fc1": fc})
    stats = firing_stats(net, images, ["conv1", "fc1"], 2, torch.device("cpu"))  # 3 batches
    assert stats["conv1"] == pytest.approx(
        {"firing_rate": 5 / (4 * 5 * 8), "silent_units": 6 / 8, "silent_stimuli": 3 / 5})
    assert stats["fc1"] == pytest.approx(
        {"firing_rate": 10 / (4 * 5 * 3), "silent_units": 2 / 3, "silent_stimuli": 0.0})


def test_held_out_subset_is_fixed_sized_and_checked() -> None:
    a, b = held_out_subset(2000, 500, 2), held_out_subset(2000, 500, 2)
    assert torch.equal(a, b) and len(a) == 500 and len(torch.unique(a)) == 500
    assert bool((a[1:] > a[:-1]).all()) and 0 <= int(a.min()) and int(a.max()) < 2000
    assert not torch.equal(a, held_out_subset(2000, 500, 3))
    assert held_out_subset(2000, None, 2) is None and held_out_subset(2000, 2000, 2) is None
    with pytest.raises(ValueError, match="test_images=2001 must lie in 1..2000"):
        held_out_subset(2000, 2001, 2)


def test_run_noise_ceilings_are_loso_over_the_scored_pairs_and_printed() -> None:
    """Lower bound by hand (scipy): each subject against the mean rank RDM of the others, over
    the cross-run pairs only; upper: against the mean rank RDM of all. One-subject ROIs have none."""
    from scipy.stats import rankdata

    from snnrsa.run.report import summary_tables

    rng = np.random.default_rng(5)
    n, shared = 14, rng.normal(size=(14, 6))
    rdms = np.stack([correlation_rdm(shared + rng.normal(size=(n, 6))) for _ in range(4)])
    sessions = np.ones((4, n), int)
    runs = np.tile(np.arange(n) % 3 + 1, (4, 1))
    brain = Brain([f"sub-0{i}" for i in range(1, 5)], [f"s{i}" for i in range(n)], [[]] * n,
                  {"IT": rdms, "V1": rdms[:1]}, sessions, runs)
    mask = brain.cross_fmri_run_pairs()
    ceil = noise_ceilings(EvalSet(brain, torch.zeros(0), [], mask))
    assert list(ceil.roi) == ["IT"]  # V1 has one subject: nothing to leave out
    iu = np.triu_indices(n, 1)
    vec = np.stack([r[iu][mask[iu]] for r in rdms])
    ranks = rankdata(vec, axis=1)
    lower = np.mean([spearmanr(np.delete(ranks, s, 0).mean(0), vec[s])[0] for s in range(4)])
    upper = np.mean([spearmanr(ranks.mean(0), v)[0] for v in vec])
    assert ceil.lower[0] == pytest.approx(lower, abs=1e-12)
    assert ceil.upper[0] == pytest.approx(upper, abs=1e-12) and lower < upper
    rsa = pd.DataFrame([{"epoch": e, "layer": "conv1", "roi": roi, "subject": "sub-01",
                         "rho": 0.1 * e} for e in (0, 1) for roi in ("IT", "V1")])
    train = pd.DataFrame({"epoch": [0, 1], "train_loss": [np.nan, 1.0],
                          "train_acc": [np.nan, 0.5], "test_acc": [0.1, 0.4]})
    text = summary_tables(rsa, train, ceil)
    block = text.split("Noise ceiling per ROI")[1].split("\n\n")[0]
    assert f"{lower:.4f}" in block and f"{upper:.4f}" in block
    assert text.index("V1") < text.index("IT")  # hierarchy order, not file order


@pytest.mark.parametrize("backend", ["snntorch_lif", "norse_lif"])
def test_batch_norm_calibration_wakes_deep_spiking_layers_and_leaves_training_alone(
    backend: str,
) -> None:
    """Default LIF network (tdBN), latency input, untrained: with BatchNorm's identity running
    statistics the deeper layers stay below threshold for every stimulus (their RDMs would be
    NaN); after calibrating on 512 training images every layer fires for every stimulus, while
    weights and the global random stream are exactly as before."""
    from snnrsa.data.training import load_training_data
    from snnrsa.run.evaluation import calibrate_batch_norm, firing_stats

    cfg = typed_cfg([f"neuron={backend}", "encoding=latency", "data.n_train=512",
                     "data.n_test=64"])
    data = load_training_data(cfg.data, run_seed=0)
    torch.manual_seed(0)
    net = build_network(cfg, len(data.classes))
    images = data.test_images[:32].float().div(255.0)
    layers = ["conv1", "conv2", "conv3", "fc1"]
    set_mode(net, False)
    before = firing_stats(net, images, layers, 32, torch.device("cpu"))
    assert before["conv3"]["silent_stimuli"] == 1.0  # the failure the calibration removes
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k
               and "num_batches" not in k}
    rng = torch.get_rng_state()
    used = calibrate_batch_norm(net, data, cfg.neuron.bn_calibration, cfg.data.batch_size,
                                torch.device("cpu"))
    assert used == 512
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in net.state_dict().items():
        if k in weights:
            assert torch.equal(v, weights[k]), k
    set_mode(net, False)
    after = firing_stats(net, images, layers, 32, torch.device("cpu"))
    for layer in layers:
        assert after[layer]["silent_stimuli"] == 0.0, (layer, after[layer])
        assert 0.01 < after[layer]["firing_rate"] < 0.9, (layer, after[layer])

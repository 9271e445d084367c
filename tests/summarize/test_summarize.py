"""snnrsa-summarize on small tables whose answers are computed by hand."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pandas as pd
import pytest

from snnrsa.summarize import (
    adjust,
    deltas,
    frozen_checkpoints,
    load_scores,
    main,
    noise_ceilings,
    prepare,
    run_tests,
    seed_scores,
    summarize,
    trajectories,
)

SEEDS = [0, 1, 2, 3, 4]
# subject-mean rho before the seed offset 0.001 * seed: (rule, roi) -> epoch -> layer -> value
BASE = {
    ("untrained", "V1"): {0: {"conv1": 0.10, "conv2": 0.05}},
    ("bp", "V1"): {0: {"conv1": 0.10, "conv2": 0.05}, 1: {"conv1": 0.02, "conv2": 0.04},
                   2: {"conv1": 0.01, "conv2": 0.03}},
    ("fa", "V1"): {0: {"conv1": 0.09, "conv2": 0.05}, 1: {"conv1": 0.06, "conv2": 0.03},
                   2: {"conv1": 0.05, "conv2": 0.02}},
}


def hand_table() -> pd.DataFrame:
    """Two subjects at +-0.01 around the subject mean; fa at epoch 2 gains 0.002 * seed more."""
    rows = []
    for (rule, roi), by_epoch in BASE.items():
        for epoch, layers in by_epoch.items():
            for layer, v in layers.items():
                for seed in SEEDS:
                    mean = v + 0.001 * seed + (0.002 * seed if (rule, epoch) == ("fa", 2) else 0)
                    for subject, off in (("sub-01", 0.01), ("sub-02", -0.01)):
                        rows.append({"rule": rule, "neuron": "rate", "encoding": "analog",
                                     "seed": seed, "epoch": epoch, "layer": layer, "roi": roi,
                                     "subject": subject, "rho": mean + off, "resolution": 32})
    # LOC: flat in epoch, conv2 above conv1
    for rule, epochs in (("untrained", [0]), ("bp", [0, 1, 2]), ("fa", [0, 1, 2])):
        for epoch in epochs:
            for layer, v in (("conv1", 0.01), ("conv2", 0.02)):
                for seed in SEEDS:
                    for subject in ("sub-01", "sub-02"):
                        rows.append({"rule": rule, "neuron": "rate", "encoding": "analog",
                                     "seed": seed, "epoch": epoch, "layer": layer, "roi": "LOC",
                                     "subject": subject, "rho": v + 0.001 * seed,
                                     "resolution": 32})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def analysed():
    table = prepare(hand_table())
    scores = seed_scores(table, {"V1": "conv1", "LOC": "conv2"})
    return table, scores, trajectories(scores), deltas(scores), run_tests(scores)


def _one(df: pd.DataFrame, **kw) -> pd.Series:
    sel = df
    for k, v in kw.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, (kw, sel)
    return sel.iloc[0]


def test_best_layer_vs_fixed_layer(analysed) -> None:
    _, _, traj, _, _ = analysed
    mean_offset = 0.001 * np.mean(SEEDS)  # 0.002
    # best layer of bp's V1 at epoch 1 is conv2 (0.04 > 0.02); the fixed map keeps conv1
    best = _one(traj, convention="best_layer", rule="bp", roi="V1", epoch=1)
    assert best.layer == "conv2" and best["mean"] == pytest.approx(0.04 + mean_offset)
    fixed = _one(traj, convention="fixed_layer", rule="bp", roi="V1", epoch=1)
    assert fixed.layer == "conv1" and fixed["mean"] == pytest.approx(0.02 + mean_offset)
    # at epoch 0 both conventions agree (conv1)
    assert _one(traj, convention="best_layer", rule="bp", roi="V1", epoch=0).layer == "conv1"
    # sd over seeds of 0.001 * seed (ddof 1) = 0.001 * sqrt(2.5); 5 seeds
    assert fixed.sd == pytest.approx(0.001 * math.sqrt(2.5)) and fixed.n_seeds == 5
    # every-layer rows are there too
    assert len(traj[(traj.convention == "layer") & (traj.rule == "fa")]) == 2 * 2 * 3


def test_deltas_vs_epoch0_and_untrained(analysed) -> None:
    _, _, _, dlt, _ = analysed
    bp1 = _one(dlt, convention="best_layer", rule="bp", roi="V1", epoch=1)
    assert bp1.delta_epoch0 == pytest.approx(0.04 - 0.10)  # conv2 at 1 minus conv1 at 0
    assert bp1.pct_epoch0 == pytest.approx(100 * -0.06 / 0.102)  # -58.82 %
    assert bp1.delta_epoch0_sd == pytest.approx(0.0, abs=1e-12)
    bp1f = _one(dlt, convention="fixed_layer", rule="bp", roi="V1", epoch=1)
    assert bp1f.delta_epoch0 == pytest.approx(0.02 - 0.10)
    fa2 = _one(dlt, convention="best_layer", rule="fa", roi="V1", epoch=2)
    # fa conv1 at 2 (0.05 + 0.003 s) minus untrained conv1 (0.10 + 0.001 s), same seed
    assert fa2.delta_untrained == pytest.approx(0.05 - 0.10 + 0.002 * 2)
    assert fa2.delta_untrained_sd == pytest.approx(0.002 * math.sqrt(2.5))
    assert _one(dlt, convention="best_layer", rule="bp", roi="V1", epoch=0).delta_untrained == \
        pytest.approx(0.0, abs=1e-12)


def test_deltas_without_an_untrained_run() -> None:
    """Sweeps without rule=untrained still get their epoch-0 deltas (no untrained column)."""
    table = hand_table()
    scores = seed_scores(prepare(table[table.rule != "untrained"]), {"V1": "conv1", "LOC": "conv2"})
    dlt = deltas(scores)
    bp1 = _one(dlt, convention="best_layer", rule="bp", roi="V1", epoch=1)
    assert bp1.delta_epoch0 == pytest.approx(0.04 - 0.10)
    assert dlt.delta_untrained.isna().all()


def test_sign_flip_rule_vs_bp(analysed) -> None:
    *_, tests = analysed
    assert list(tests.columns[:12]) == [
        "family", "rule_a", "rule_b", "roi", "epoch_a", "epoch_b", "diff", "cohens_d",
        "p_one_sided", "p_two_sided", "p_fdr_family", "p_fdr_all"]
    t = _one(tests, convention="best_layer", family="rule_vs_bp", rule_a="fa", roi="V1")
    assert (t.rule_b, t.epoch_a, t.epoch_b) == ("bp", 2, 2)
    # fa conv1 (0.05 + 0.003 s) - bp conv2 (0.03 + 0.001 s) = 0.02 + 0.002 s > 0 for all 5 seeds
    assert t["diff"] == pytest.approx(0.024)
    assert t.cohens_d == pytest.approx(0.024 / (0.002 * math.sqrt(2.5)))
    assert t.p_one_sided == pytest.approx(1 / 32)
    assert t.p_two_sided == pytest.approx(2 / 32)
    assert not (tests[tests.family == "rule_vs_bp"].rule_a == "untrained").any()


def test_epoch_and_trend_families(analysed) -> None:
    *_, tests = analysed
    e = _one(tests, convention="best_layer", family="epoch0_vs_epoch1", rule_a="bp", roi="V1")
    assert e["diff"] == pytest.approx(0.06) and e.p_one_sided == pytest.approx(1 / 32)
    assert math.isnan(e.cohens_d)  # identical differences: sd 0
    tr = _one(tests, convention="best_layer", family="trend", rule_a="bp", roi="V1")
    assert (tr.epoch_a, tr.epoch_b) == (1, 2)
    assert tr["diff"] == pytest.approx(-1.0)  # falls in every seed
    assert tr.p_one_sided == pytest.approx(1.0) and tr.p_two_sided == pytest.approx(2 / 32)
    flat = _one(tests, convention="best_layer", family="trend", rule_a="bp", roi="LOC")
    assert flat["diff"] == 0 and flat.p_two_sided == 1.0
    # families: 1 rule x 2 ROIs; 2 rules x 2 ROIs; 2 rules x 2 ROIs (untrained has no epoch > 0)
    best = tests[tests.convention == "best_layer"]
    assert best.family.value_counts().to_dict() == {
        "rule_vs_bp": 2, "epoch0_vs_epoch1": 4, "trend": 4}


def test_trend_leaves_out_checkpoints_after_training_stopped() -> None:
    """Layer-wise STDP spends its image budget by epoch 2: epochs 5 and 10 score the same network
    again. Counted as a trend they would turn a rise over epochs 1-2 (and a plateau) into a
    weaker, flat-topped one; left out, the trend runs over epochs 1 and 2 only."""
    rows = []
    budget = {0: 0, 1: 100, 2: 200, 5: 200, 10: 200}
    for seed in SEEDS:
        for epoch, images in budget.items():
            rho = {0: 0.0, 1: 0.01, 2: 0.05, 5: 0.02, 10: 0.03}[epoch] + 0.001 * seed
            for subject in ("sub-01", "sub-02"):
                rows.append({"rule": "stdp", "seed": seed, "epoch": epoch, "layer": "conv1",
                             "roi": "V1", "subject": subject, "rho": rho,
                             "trained_images": images})
    table = prepare(pd.DataFrame(rows))
    frozen = frozen_checkpoints(table)
    assert frozen == {("stdp", s, e) for s in SEEDS for e in (5, 10)}
    scores = seed_scores(table, {"V1": "conv1"})
    kept = _one(run_tests(scores, frozen=frozen), convention="best_layer", family="trend")
    assert (kept.epoch_a, kept.epoch_b) == (1, 2) and kept["diff"] == pytest.approx(1.0)
    counted = _one(run_tests(scores), convention="best_layer", family="trend")
    assert counted["diff"] == pytest.approx(0.4)  # ranks 1, 4, 2, 3: the frozen epochs blur it
    # a rule that learns at every checkpoint (trained_images grows) loses none
    grows = table.assign(trained_images=table.epoch * 100)
    assert frozen_checkpoints(grows) == set()


def test_bh_within_family_and_over_all() -> None:
    t = pd.DataFrame({
        "family": ["a", "a", "a", "a", "b"], "rule_a": "x", "rule_b": "y", "roi": "V1",
        "epoch_a": 0, "epoch_b": 1, "diff": 0.0, "cohens_d": 0.0, "p_one_sided": 0.5,
        "p_two_sided": [0.01, 0.04, 0.03, 0.5, 0.02], "convention": "best_layer", "n_seeds": 5})
    out = adjust(t)
    # family a by hand: sorted .01 .03 .04 .5 -> .04, .06, .0533, .5 -> step-up minimum
    assert out.p_fdr_family.tolist() == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.5, 0.02])
    # over all 5: sorted .01 .02 .03 .04 .5 -> .05 .05 .05 .05 .5
    assert out.p_fdr_all.tolist() == pytest.approx([0.05, 0.05, 0.05, 0.5, 0.05])


def test_condition_columns_split_rules() -> None:
    t = hand_table()
    t2 = t[t.rule == "bp"].assign(encoding="poisson")
    lab = prepare(pd.concat([t, t2]))
    assert {"bp|analog", "bp|poisson", "fa|analog", "untrained|analog"} == set(lab.rule)
    # the untrained run of the same condition is the reference; the other falls back to none
    dlt = deltas(seed_scores(lab))
    assert dlt[dlt.rule == "bp|poisson"].delta_untrained.isna().all()
    assert dlt[dlt.rule == "fa|analog"].delta_untrained.notna().all()
    tests = run_tests(seed_scores(lab))
    assert set(tests[tests.family == "rule_vs_bp"].rule_b) == {"bp|analog"}


def test_missing_columns_fail() -> None:
    with pytest.raises(ValueError, match="lacks columns"):
        prepare(hand_table().drop(columns=["seed"]))


def test_noise_ceiling_from_results_h5(tmp_path) -> None:
    rng = np.random.default_rng(0)
    truth = rng.random((10, 10))
    subj = []
    for _ in range(3):
        m = truth + 0.3 * rng.random((10, 10))
        m = (m + m.T) / 2
        np.fill_diagonal(m, 0)
        subj.append(m)
    run = tmp_path / "run"
    run.mkdir()
    with h5py.File(run / "results.h5", "w") as f:
        f["brain/V1"] = np.stack(subj)
        f["brain/subjects"] = np.array([b"sub-01", b"sub-02", b"sub-03"])
    c = noise_ceilings([run])
    from snnrsa.rsa.ceiling import loso_noise_ceiling

    lo, up = loso_noise_ceiling(np.stack(subj))
    row = _one(c, roi="V1")
    assert (row.lower, row.upper) == pytest.approx((lo, up)) and lo < up


def test_summarize_writes_summary_from_csv_and_run_dirs(tmp_path, capsys) -> None:
    t = hand_table()
    sweep = tmp_path / "sweep"
    for (rule, seed), g in t.groupby(["rule", "seed"]):
        d = sweep / f"{rule}_seed{seed}"
        d.mkdir(parents=True)
        g.to_csv(d / "rsa.csv", index=False)
        if rule == "fa":  # FA's per-epoch angles: conv1's B carries no error (no W-B angle)
            pd.DataFrame([{"rule": rule, "seed": seed, "epoch": e, "layer": layer,
                           "angle_signal": 80.0 - 10 * e + seed,
                           "angle_w_b": None if layer == "conv1" else 89.0 - e}
                          for e in (0, 1, 2) for layer in ("conv1", "conv2")]
                         ).to_csv(d / "rule_log.csv", index=False)
    table, runs = load_scores([sweep])
    assert len(runs) == 15 and len(table) == len(t)
    assert main([str(sweep)]) == 0
    out = sweep / "summary"
    for name in ("trajectories.csv", "tests.csv", "deltas.csv", "report.md",
                 "v1_trajectory.png", "v1_trajectory.pdf", "v1_delta.png", "last_epoch_bars.pdf",
                 "all_rois.png", "v1_vs_loc.png", "seed_variability.png", "rule_fa_log.png",
                 "rule_fa_log.pdf"):
        assert (out / name).stat().st_size > 0, name
    assert not (out / "rule_bp_log.png").exists()  # bp logs no diagnostics
    logs = pd.read_csv(out / "rule_log.csv")
    assert len(logs) == 5 * 3 * 2 and logs.angle_w_b.isna().sum() == 15
    traj = pd.read_csv(out / "trajectories.csv")
    assert list(traj.columns) == ["rule", "roi", "convention", "layer", "epoch", "mean", "sd",
                                  "n_seeds"]
    report = (out / "report.md").read_text()
    assert "| untrained |" in report and "-58.8" in report
    assert "Written to" in capsys.readouterr().out
    # a plain table elsewhere works too, and without figures
    csv = tmp_path / "table.csv"
    t.to_csv(csv, index=False)
    res = summarize([csv], tmp_path / "s2", figures=False)
    # default fixed map: V1 -> conv1, LOC -> conv3 is absent here, so fixed-layer tests cover V1 only
    assert len(res["tests"]) == 10 + 5 and (tmp_path / "s2" / "tests.csv").exists()


def test_rois_follow_the_visual_hierarchy_in_every_table() -> None:
    from snnrsa.summarize.loading import roi_order

    assert roi_order(["IT", "hV4", "LOC", "V1", "pSTS", "V3", "V2", "EVC", "Amygdala"]) == [
        "V1", "V2", "V3", "hV4", "EVC", "LOC", "IT", "Amygdala", "pSTS"]
    t = hand_table()
    t = pd.concat([t, t[t.roi == "V1"].assign(roi="hV4"), t[t.roi == "LOC"].assign(roi="IT")])
    scores = seed_scores(t)
    want = ["V1", "hV4", "LOC", "IT"]
    tests = run_tests(scores)
    for frame in (trajectories(scores).query("rule == 'bp'"), deltas(scores).query("rule == 'bp'"),
                  tests[tests.rule_a == "fa"]):
        assert list(dict.fromkeys(frame.roi)) == want


def test_epoch_ticks_stay_readable_on_the_compressed_axis() -> None:
    """At the study's checkpoints on a narrow panel every epoch is labelled and no two labels
    overlap (on the former symlog axis 20, 30 and 40 did), and the data are drawn: after an
    axhline, autoscale's 5 % margin put the left limit at epoch -2, where log(1 + epoch / 2) is
    -inf, and every 40-epoch trajectory figure came out blank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from snnrsa.summarize.figures import _epoch_axis

    epochs = [0, 1, 2, 5, 10, 20, 30, 40]
    fig, ax = plt.subplots(figsize=(3.2, 3.0))
    ax.plot(epochs, np.linspace(0, 0.1, len(epochs)))
    ax.axhline(0.05, ls="--")  # the untrained reference, as the trajectory figures draw it
    _epoch_axis(ax, epochs)
    fig.tight_layout()
    fig.canvas.draw()
    labels = [t for t in ax.get_xticklabels() if t.get_text()]
    assert [t.get_text() for t in labels] == [str(e) for e in epochs]
    boxes = [t.get_window_extent() for t in labels]
    assert all(a.x1 + 2 < b.x0 for a, b in zip(boxes, boxes[1:]))
    lo, hi = ax.get_xlim()
    assert -2 < lo < 0 and hi > 40
    points = ax.transData.transform(np.c_[epochs, np.linspace(0, 0.1, len(epochs))])
    assert np.isfinite(points).all()
    plt.close(fig)

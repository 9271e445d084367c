"""End to end: the main job writes the run-directory contract; multirun runs several jobs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "data.n_train=256", "data.n_test=128", "data.batch_size=64",
    "backbone.channels=[8,16,16]", "backbone.fc_units=[32]",
    "brain.n_concepts=24", "brain.n_test=4", "checkpoints=[0,1,2]", "progress=false",
]


def snnrsa(args: list[str], cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SNNRSA_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "snnrsa", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, cache_dir) -> Path:
    out = tmp_path_factory.mktemp("run")
    proc = snnrsa([*TINY, f"hydra.run.dir={out}"], cache_dir)
    assert "Best-layer Spearman rho per ROI" in proc.stdout
    assert "Accuracy (held-out test set)" in proc.stdout
    assert "Noise ceiling per ROI" in proc.stdout
    return out


@pytest.mark.slow
def test_run_directory_contract(run_dir: Path) -> None:
    rsa = pd.read_csv(run_dir / "rsa.csv")
    for col in ("rule", "neuron", "encoding", "seed", "epoch", "layer", "roi", "subject", "rho",
                "resolution"):
        assert col in rsa.columns
    rois = ["V1", "V2", "V3", "hV4", "LOC", "IT"]
    layers = ["conv1", "conv2", "conv3", "fc1"]
    assert len(rsa) == 3 * len(layers) * len(rois) * 3
    assert sorted(rsa.epoch.unique()) == [0, 1, 2]
    assert rsa.duplicated(["epoch", "layer", "roi", "subject"]).sum() == 0
    assert rsa.rho.between(-1, 1).all() and rsa.rho.notna().all()

    with h5py.File(run_dir / "results.h5") as f:
        names = [s.decode() for s in f["stimuli/names"][:]]
        subjects = [s.decode() for s in f["brain/subjects"][:]]
        assert subjects == sorted(rsa.subject.unique())
        assert len(names) == 24
        for roi in rois:
            assert f[f"brain/{roi}"].shape == (3, 24, 24)
        for epoch in (0, 1, 2):
            for layer in layers:
                assert f[f"model/epoch_{epoch}/{layer}"].shape == (24, 24)
        for key in ("config", "versions", "device", "git_commit"):
            assert f.attrs[key]
        assert "torch" in json.loads(f.attrs["versions"])
        # the stored RDMs reproduce the stored scores
        from scipy.stats import spearmanr

        iu = np.triu_indices(24, 1)
        row = rsa[(rsa.epoch == 2) & (rsa.layer == "conv2") & (rsa.roi == "IT")].iloc[0]
        model = f["model/epoch_2/conv2"][:][iu]
        brain = f["brain/IT"][subjects.index(row.subject)][iu]
        assert abs(spearmanr(model, brain)[0] - row.rho) < 1e-10

    for epoch in (0, 1, 2):
        ckpt = torch.load(run_dir / "checkpoints" / f"epoch_{epoch}.pt", weights_only=False)
        assert ckpt["epoch"] == epoch and "model" in ckpt
    assert (run_dir / "rsa_trajectory.png").stat().st_size > 10_000
    ceil = pd.read_csv(run_dir / "noise_ceiling.csv")
    assert list(ceil.roi) == rois and (ceil.lower < ceil.upper).all()
    assert (ceil.n_subjects == 3).all()
    train = pd.read_csv(run_dir / "train.csv")
    assert list(train.epoch) == [0, 1, 2]
    assert {"train_loss", "train_acc", "test_loss", "test_acc"} <= set(train.columns)
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["git_commit"] and meta["device"].startswith("cpu")
    assert (train.eval_seconds > 0).all() and train.test_acc.notna().all()
    assert meta["wall_seconds"] == pytest.approx(train.seconds.sum() + train.eval_seconds.sum(),
                                                 abs=1e-2)
    assert meta["process_seconds"] >= meta["wall_seconds"]
    assert "n_concepts: 24" in (run_dir / "config.yaml").read_text()
    assert not list(run_dir.rglob("*.tmp"))  # no temporary files left behind


@pytest.mark.slow
def test_same_seed_same_numbers(run_dir: Path, tmp_path: Path, cache_dir: Path) -> None:
    snnrsa([*TINY, f"hydra.run.dir={tmp_path}"], cache_dir)
    a = pd.read_csv(run_dir / "rsa.csv")
    b = pd.read_csv(tmp_path / "rsa.csv")
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.slow
def test_multirun_two_jobs(tmp_path: Path, cache_dir: Path) -> None:
    snnrsa(["-m", *TINY, "checkpoints=[0,1]", "neuron=rate,snntorch_lif",
            "neuron.time_steps=2", f"hydra.sweep.dir={tmp_path}"], cache_dir)
    jobs = sorted(p.parent for p in tmp_path.rglob("rsa.csv"))
    assert len(jobs) == 2
    tables = {t.neuron.iloc[0]: t for t in (pd.read_csv(j / "rsa.csv") for j in jobs)}
    assert sorted(tables) == ["rate", "snntorch_lif"]
    # firing statistics with every score of the spiking network, none for the rate network
    lif = tables["snntorch_lif"]
    for col in ("firing_rate", "silent_units", "silent_stimuli"):
        assert col not in tables["rate"].columns
        assert lif[col].between(0, 1).all()
        assert (lif.groupby(["epoch", "layer"])[col].nunique() == 1).all()  # one value per layer
    assert (lif.firing_rate > 0).any()


@pytest.mark.slow
def test_untrained_is_evaluated_at_epoch_zero_only(tmp_path: Path, cache_dir: Path) -> None:
    snnrsa([*TINY, "rule=untrained", "readout=linear_probe", "readout.probe_layers=[conv1,fc1]",
            "rsa.pairs=cross_fmri_run", f"hydra.run.dir={tmp_path}"], cache_dir)
    rsa = pd.read_csv(tmp_path / "rsa.csv")
    assert sorted(rsa.epoch.unique()) == [0]
    assert (rsa.pairs == "cross_fmri_run").all() and rsa.rho.notna().any()
    probe = pd.read_csv(tmp_path / "probe.csv")
    assert list(probe.layer) == ["conv1", "fc1"] and (probe.epoch == 0).all()
    assert probe.probe_test_acc.between(0, 1).all()
    assert probe.n_features.tolist() == [8 * 4, 32]  # conv1 (8 channels) pooled to 2x2; fc1


@pytest.mark.parametrize(("overrides", "named"), [
    (["neuron=snntorch_lif", "neuron.time_steps=1"], "neuron.time_steps=1"),
    (["rule=pc", "rule.output_energy=mes"], "rule.output_energy='mes' is not one of ['ce', 'mse']"),
])
def test_invalid_config_fails_before_work(overrides: list[str], named: str, tmp_path: Path) -> None:
    """Nothing is loaded or generated: the data cache stays empty, no run file is written."""
    cache = tmp_path / "cache"
    env = {**os.environ, "SNNRSA_CACHE": str(cache)}
    proc = subprocess.run(
        [sys.executable, "-m", "snnrsa", *overrides, f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert named in proc.stderr + proc.stdout
    assert not (tmp_path / "run" / "meta.json").exists() and not cache.exists()


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_numbers(tmp_path: Path, cache_dir: Path) -> None:
    import signal
    import time

    args = [*TINY, "checkpoints=[0,1,2,4,6]", "data.augment=true"]
    snnrsa([*args, f"hydra.run.dir={tmp_path / 'whole'}"], cache_dir)
    killed = tmp_path / "killed"
    env = {**os.environ, "SNNRSA_CACHE": str(cache_dir), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "snnrsa", *args, f"hydra.run.dir={killed}"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (killed / "checkpoints" / "epoch_2.pt").exists():
        assert proc.poll() is None and time.time() < deadline, "run ended before the kill"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "checkpoints" / "epoch_6.pt").exists()
    resumed = snnrsa([*args, f"hydra.run.dir={killed}"], cache_dir)
    assert "resuming" in resumed.stderr + resumed.stdout
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "whole" / "rsa.csv"),
                                  pd.read_csv(killed / "rsa.csv"))
    timing = ["seconds", "eval_seconds"]
    train_a = pd.read_csv(tmp_path / "whole" / "train.csv").drop(columns=timing)
    train_b = pd.read_csv(killed / "train.csv").drop(columns=timing)
    pd.testing.assert_frame_equal(train_a, train_b)
    again = snnrsa([*args, f"hydra.run.dir={killed}"], cache_dir)
    assert "complete" in again.stderr + again.stdout


@pytest.mark.slow
def test_held_out_accuracy_every_k_epochs_on_a_fixed_subset(tmp_path: Path,
                                                            cache_dir: Path) -> None:
    snnrsa([*TINY, "checkpoints=[0,3]", "test_every=2", "test_images=50",
            f"hydra.run.dir={tmp_path}"], cache_dir)
    train = pd.read_csv(tmp_path / "train.csv")
    assert list(train.epoch) == [0, 1, 2, 3]
    assert train.test_acc.notna().tolist() == [True, False, True, True]  # every 2 + checkpoints
    assert np.allclose(train.test_acc.dropna() * 50, np.round(train.test_acc.dropna() * 50))
    assert train.train_loss.iloc[1:].notna().all()
    assert (train.eval_seconds > 0).tolist() == [True, False, False, True]
    assert sorted(pd.read_csv(tmp_path / "rsa.csv").epoch.unique()) == [0, 3]


@pytest.mark.slow
def test_evaluate_from_rescores_the_same_checkpoints(run_dir: Path, tmp_path: Path,
                                                     cache_dir: Path) -> None:
    same = tmp_path / "same"
    snnrsa([*TINY, f"evaluate_from={run_dir}", f"hydra.run.dir={same}"], cache_dir)
    pd.testing.assert_frame_equal(pd.read_csv(run_dir / "rsa.csv"), pd.read_csv(same / "rsa.csv"))
    assert not (same / "checkpoints").exists()
    bigger = tmp_path / "bigger"
    snnrsa([*TINY, f"evaluate_from={run_dir}", "brain.resolution=48",
            f"hydra.run.dir={bigger}"], cache_dir)
    rsa = pd.read_csv(bigger / "rsa.csv")
    assert sorted(rsa.epoch.unique()) == [0, 1, 2] and (rsa.resolution == 48).all()


@pytest.mark.slow
def test_stdp_dynamics_probes_within_epochs(tmp_path: Path, cache_dir: Path) -> None:
    snnrsa([*TINY, "experiment=stdp_dynamics", "data=synthetic", "checkpoints=[0,1,2]",
            "dynamics.interval=128", "readout.probe_layers=[conv1]", "rule.layer_images=[256]",
            f"hydra.run.dir={tmp_path}"], cache_dir)
    dyn = pd.read_csv(tmp_path / "dynamics_rsa.csv")
    # 256 training images per epoch (batch 64), a probe every 128 images, epochs 1 and 2
    assert sorted(dyn.images.unique()) == [128, 256, 384, 512]
    assert sorted(dyn.epoch.unique()) == [0.5, 1.0, 1.5, 2.0]
    assert set(dyn.layer) == {"conv1", "conv2", "conv3", "fc1"} and dyn.rho.notna().all()
    with h5py.File(tmp_path / "results.h5") as f:
        probes = sorted(f["dynamics"])
        assert len(probes) == 4
        last = f["dynamics"][probes[-1]]
        assert last.attrs["images"] == 512
        hist = last["conv1_w_hist"][()]
        assert hist.sum() == 8 * 2 * 5 * 5  # every conv1 weight (8 features, on/off input, 5x5)
    rule_log = pd.read_csv(tmp_path / "rule_log.csv")
    assert {"C", "layer", "images"} <= set(rule_log.columns)
    assert (pd.read_csv(tmp_path / "probe.csv").layer == "conv1").all()
    rsa = pd.read_csv(tmp_path / "rsa.csv")  # conv1 trained in epoch 1, conv2 in epoch 2
    trained = rsa.groupby(["epoch", "layer"]).trained_images.first()
    assert trained[(1, "conv1")] == trained[(2, "conv1")] == 256 and trained[(2, "conv2")] == 256
    assert trained[(1, "conv2")] == 0 and trained[(2, "fc1")] == 0
    train = pd.read_csv(tmp_path / "train.csv")  # no classifier: NaN, not 0
    assert train.train_acc.isna().all() and train.test_acc.isna().all()

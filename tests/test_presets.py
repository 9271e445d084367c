"""Study presets (experiment=leutenegger2026_* ...), per-rule settings and launcher configs."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
from omegaconf import OmegaConf

from snnrsa.config import ConfigError

from conftest import REPO, compose_cfg, typed_cfg

THINGS = ["brain.fmri_dir=/data/things-fmri/betas_csv", "brain.images_dir=/data/THINGS/images"]
STUDY_RULES = ["untrained", "bp", "fa", "pc_published", "stdp_published"]
# the study's per-rule settings: init, dropout, BN mode at evaluation in the published preset
EXPECTED = {
    "untrained": ("default", 0.0, "eval"),
    "bp": ("default", 0.3, "eval"),
    "fa": ("study_fa", 0.3, "eval"),
    "pc_published": ("default", 0.0, "train"),
    "stdp_published": ("study_stdp", 0.0, "train"),
}


@pytest.mark.parametrize("rule", STUDY_RULES)
def test_published_per_rule_settings(rule: str) -> None:
    c = typed_cfg(["experiment=leutenegger2026_published", f"study_rule={rule}", *THINGS])
    init, dropout, bn = EXPECTED[rule]
    assert (c.rule.name, c.backbone.init, c.backbone.dropout, c.bn_eval_mode) == (
        rule, init, dropout, bn)
    assert c.neuron.name == "rate" and c.encoding.name == "analog"
    assert c.data.name == "cifar10" and c.data.n_train == 8000 and c.data.augment
    assert c.data.batch_size == 128 and c.data.drop_last
    assert c.checkpoints == [0, 1, 2, 5, 10, 20, 30, 40]
    assert c.brain.name == "things" and c.brain.resolution == 224
    assert c.brain.selection == "exemplar01" and list(c.brain.rois) == [
        "V1", "V2", "V3", "hV4", "LOC", "IT"]
    assert c.rsa.layers == ["conv1", "conv2", "conv3", "fc1"] and c.rsa.layer_pooling == "gap"
    if rule == "stdp_published":
        assert c.rule.relu_before_bn and c.rule.sign == "as_coded"


@pytest.mark.parametrize("rule", STUDY_RULES)
def test_corrected_sets_bn_eval_for_every_rule(rule: str) -> None:
    c = typed_cfg(["experiment=leutenegger2026_corrected", f"study_rule={rule}", *THINGS])
    init, dropout, _ = EXPECTED[rule]
    assert (c.backbone.init, c.backbone.dropout, c.bn_eval_mode) == (init, dropout, "eval")


def test_sweep_parameters_and_fixed_sweep_dirs() -> None:
    h = compose_cfg(["experiment=leutenegger2026_published"], return_hydra_config=True).hydra
    assert h.sweeper.params.study_rule == ",".join(STUDY_RULES)
    assert h.sweeper.params.seed == "42,123,456,789,1337"
    assert h.sweep.dir == "runs/leutenegger2026_published"
    r = compose_cfg(["experiment=resolution_sweep"], return_hydra_config=True).hydra
    assert r.sweeper.params["brain.resolution"] == "32,64,96,128,160,224"
    assert "res${brain.resolution}" in OmegaConf.to_container(r.sweep)["subdir"]
    res = compose_cfg(["experiment=resolution_sweep", "study_rule=fa", "seed=42"])
    assert res.evaluate_from == "runs/leutenegger2026_corrected/fa_seed42"
    e = compose_cfg(["experiment=encoding_swap"], return_hydra_config=True).hydra
    assert e.sweeper.params.study_input == "rate_analog,lif_analog,lif_poisson,lif_latency"


@pytest.mark.parametrize("preset", ["leutenegger2026_published", "leutenegger2026_corrected",
                                    "resolution_sweep"])
def test_things_presets_fail_naming_the_paths(preset: str) -> None:
    with pytest.raises(ConfigError, match="fmri_dir"):
        typed_cfg([f"experiment={preset}"])


def test_things_preset_fails_at_start_on_the_command_line(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "snnrsa", "experiment=leutenegger2026_published",
         f"hydra.run.dir={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "fmri_dir" in proc.stderr + proc.stdout


def test_replicate_cichy92_and_encoding_swap_resolve() -> None:
    c = typed_cfg(["experiment=replicate_cichy92", "study_rule=stdp_published"])
    assert c.brain.name == "rdm_file" and c.brain.selection == "cichy92"
    assert set(c.brain.rois) == {"EVC", "IT"} and c.brain.resolution == 224
    assert c.bn_eval_mode == "eval" and c.backbone.init == "study_stdp"
    for name, neuron, enc in (("rate_analog", "rate", "analog"), ("lif_analog", "snntorch_lif",
                              "analog"), ("lif_poisson", "snntorch_lif", "poisson"),
                              ("lif_latency", "snntorch_lif", "latency")):
        c = typed_cfg(["experiment=encoding_swap", f"study_input={name}"])
        assert (c.rule.name, c.neuron.name, c.encoding.name) == ("bp", neuron, enc)
        assert c.backbone.dropout == 0.3


def test_joblib_launcher_config() -> None:
    h = compose_cfg(["hydra/launcher=local_parallel"], return_hydra_config=True).hydra
    assert h.launcher._target_.endswith("JoblibLauncher")
    assert h.launcher.n_jobs == 2 and h.launcher.backend == "loky"


@pytest.mark.parametrize("name,target", [("slurm_gpu", "SlurmLauncher"),
                                         ("submitit_local_gpu", "LocalLauncher")])
def test_submitit_launcher_configs(name: str, target: str) -> None:
    h = compose_cfg([f"hydra/launcher={name}"], return_hydra_config=True).hydra
    assert h.launcher._target_.endswith(target) and h.launcher.gpus_per_node == 1


def test_slurm_gpu_resolves_to_the_sbatch_script_users_get(tmp_path, monkeypatch) -> None:
    """The slurm_gpu parameters go through submitit exactly as the launcher passes them (no cluster:
    a stand-in ``srun`` only lets submitit build its executor) and give the expected #SBATCH lines."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    srun = tmp_path / "bin" / "srun"
    srun.parent.mkdir()
    srun.write_text("#!/bin/sh\nexit 0\n")
    srun.chmod(0o755)
    monkeypatch.setenv("PATH", f"{srun.parent}{os.pathsep}{os.environ['PATH']}")
    h = compose_cfg(["hydra/launcher=slurm_gpu", "hydra.launcher.partition=gpu",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}"], return_hydra_config=True).hydra
    params = OmegaConf.to_container(h.launcher, resolve=True)
    assert params["submitit_folder"] == f"{tmp_path / 'sweep'}/.submitit/%j"
    # the launcher's own mapping (hydra_submitit_launcher.BaseSubmititLauncher.launch)
    executor = submitit.AutoExecutor(folder=params["submitit_folder"], cluster="slurm",
                                     slurm_max_num_timeout=params["max_num_timeout"])
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()
                                  if k not in {"_target_", "submitit_folder", "max_num_timeout"}})
    script = executor._executor._make_submission_file_text("python -m snnrsa", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--mem=32GB",
                 "--time=720", "--ntasks-per-node=1", "--nodes=1", "--signal=USR2@120"):
        assert f"#SBATCH {line}\n" in script, line
    assert "--account" not in script and "--qos" not in script  # unset stays unset


@pytest.mark.slow
def test_submitit_local_sweep_writes_the_run_directory_contract(tmp_path, cache_dir) -> None:
    """Two tiny jobs through hydra/launcher=submitit_local: the local twin of the SLURM path."""
    from test_main_job import TINY

    env = {**os.environ, "SNNRSA_CACHE": str(cache_dir), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "snnrsa", "-m", "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=15", "rule=bp,untrained",
            *[a for a in TINY if not a.startswith("checkpoints")], "checkpoints=[0,1]",
            f"hydra.sweep.dir={tmp_path}", "hydra.sweep.subdir=${rule.name}_seed${seed}"]
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(list((tmp_path / ".submitit").glob("*/*_submitted.pkl"))) == 2  # submitit ran both
    for run, epochs in (("bp_seed0", [0, 1]), ("untrained_seed0", [0])):
        d = tmp_path / run
        for name in ("rsa.csv", "train.csv", "results.h5", "config.yaml", "meta.json",
                     "rsa_trajectory.png"):
            assert (d / name).is_file(), f"{run}/{name}"
        rsa = pd.read_csv(d / "rsa.csv")
        assert sorted(rsa.epoch.unique()) == epochs
        assert rsa.rho.notna().all() and rsa.rho.between(-1, 1).all()
        assert set(rsa.rule) == {run.split("_")[0]}
        assert sorted(p.name for p in (d / "checkpoints").iterdir()) == [
            f"epoch_{e}.pt" for e in epochs]


@pytest.mark.slow
def test_joblib_sweep_runs_and_rerun_skips(tmp_path, cache_dir) -> None:
    """Two jobs in parallel worker processes; the same sweep again skips both finished jobs."""
    from test_main_job import TINY

    env = {**os.environ, "SNNRSA_CACHE": str(cache_dir), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "snnrsa", "-m", "hydra/launcher=local_parallel",
            "rule=bp,untrained", *[a for a in TINY if not a.startswith("checkpoints")],
            "checkpoints=[0]", f"hydra.sweep.dir={tmp_path}",
            "hydra.sweep.subdir=${rule.name}_seed${seed}"]
    first = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    runs = sorted(p.name for p in tmp_path.iterdir() if (p / "rsa.csv").exists())
    assert runs == ["bp_seed0", "untrained_seed0"]
    before = {r: (tmp_path / r / "rsa.csv").stat().st_mtime_ns for r in runs}
    # the same sweep again (basic launcher: one process, the skip lives in the job itself)
    again = [a for a in args if not a.startswith("hydra/launcher")]
    second = subprocess.run(again, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert (second.stdout + second.stderr).count("nothing to do") == 2
    assert {r: (tmp_path / r / "rsa.csv").stat().st_mtime_ns for r in runs} == before
    rsa = pd.read_csv(tmp_path / "bp_seed0" / "rsa.csv")
    assert sorted(rsa.epoch.unique()) == [0]

"""Fingerprints of every number a run writes, to show that a refactor changes none of them.

Runs a tiny config of each rule (and of the rate / snntorch / norse backbones where a rule accepts
them, and ``experiment=stdp_dynamics``) through the command line into temporary run directories
and prints the sha256 of ``rsa.csv``, ``train.csv``, ``rule_log.csv`` (and ``dynamics_rsa.csv``,
``probe.csv`` where written). ``train.csv`` carries the wall-time column ``seconds``: it is hashed
with that column dropped (the CSV is re-read with pandas and written back without it). Labels
renamed since a baseline are mapped back (``RENAMED_LABELS``). Finally a run killed after its
epoch-1 checkpoint and resumed must equal the uninterrupted run, file by file.

    python tools/number_fingerprints.py [--jobs 2] [--only bp_rate ...] > hashes.txt

Compare two outputs with ``diff``; every line must match. Each config takes a few seconds on two
CPU cores (about 2 minutes in all with ``--jobs 2``).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "data.n_train=96", "data.n_test=32", "data.batch_size=32",
    "backbone.channels=[4,8,8]", "backbone.fc_units=[16]",
    "brain.n_concepts=16", "brain.n_test=4", "checkpoints=[0,1,2]", "progress=false",
    "rsa.eval_batch_size=32",
]
LIF = ["neuron.time_steps=4"]
STDP = ["encoding=latency", "readout=linear_probe", "rsa.layers=[conv1,conv2,conv3]",
        "rule.layer_images=[64,64,64]"]
# name -> overrides (old README keys: these are the keys users type; a renamed key is mapped here)
CONFIGS: dict[str, list[str]] = {
    "bp_rate": ["rule=bp"],
    "bp_snntorch_poisson": ["rule=bp", "neuron=snntorch_lif", "encoding=poisson", *LIF],
    "bp_norse_latency": ["rule=bp", "neuron=norse_lif", "encoding=latency", *LIF],
    "bp_snntorch_spike_count": ["rule=bp", "neuron=snntorch_lif", "readout=spike_count", *LIF],
    "bp_snntorch_library_membrane": ["rule=bp", "neuron=snntorch_lif", "neuron.impl=library",
                                     "readout=membrane", *LIF],
    "fa_rate": ["rule=fa"],
    "fa_rate_all_sign": ["rule=fa", "rule.layers=all", "rule.feedback=sign_symmetric"],
    "fa_snntorch": ["rule=fa", "neuron=snntorch_lif", *LIF],
    "pc_rate": ["rule=pc"],
    "pc_rate_mse": ["rule=pc", "rule.output_energy=mse", "rule.optimizer=sgd"],
    "pc_published_rate": ["rule=pc_published", "bn_eval_mode=train"],
    "stdp_snntorch": ["rule=stdp", "neuron=snntorch_lif", *LIF, *STDP],
    "stdp_norse_fixed": ["rule=stdp", "neuron=norse_lif", *LIF, *STDP,
                         "rule.threshold_mode=fixed", "rule.homeostasis_tau=0"],
    "stdp_trace_snntorch": ["rule=stdp_trace", "neuron=snntorch_lif", *LIF, *STDP],
    "stdp_published_rate": ["rule=stdp_published", "backbone.init=kaiming_normal",
                            "bn_eval_mode=train"],
    "untrained_rate": ["rule=untrained", "readout=linear_probe", "readout.probe_layers=[conv1,fc1]"],
    "untrained_norse": ["rule=untrained", "neuron=norse_lif", *LIF],
    "stdp_dynamics": ["experiment=stdp_dynamics", "data=synthetic", "checkpoints=[0,1,2]",
                      "dynamics.interval=48",
                      *LIF, "rule.layer_images=[64,64,64]", "readout.probe_layers=[conv1]"],
}
FILES = ("rsa.csv", "train.csv", "rule_log.csv", "dynamics_rsa.csv", "probe.csv")
TIMING = ("seconds", "eval_seconds")
# labels renamed since a baseline (issue 14: readout=probe -> linear_probe), mapped back in the
# CSVs before hashing so that hashes compare across the rename; numbers are hashed as written
RENAMED_LABELS = ((b",linear_probe,", b",probe,"), (b",linear_probe\n", b",probe\n"))


def sha(path: Path) -> str:
    if not path.exists():
        return "-"
    data = path.read_bytes()
    for new, old in RENAMED_LABELS:
        data = data.replace(new, old)
    if path.name == "train.csv":  # wall time differs run to run: drop it, keep every number else
        frame = pd.read_csv(io.BytesIO(data))
        buf = io.StringIO()
        frame.drop(columns=[c for c in TIMING if c in frame]).to_csv(buf, index=False)
        data = buf.getvalue().encode()
    return hashlib.sha256(data).hexdigest()[:16]


def run(args: list[str], out: Path, cache: Path, wait: bool = True):
    env = {**os.environ, "SNNRSA_CACHE": str(cache), "OMP_NUM_THREADS": "1",
           "PYTHONHASHSEED": "0"}
    cmd = [sys.executable, "-m", "snnrsa", *TINY, *args, f"hydra.run.dir={out}"]
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc


def fingerprint(name: str, tmp: Path, cache: Path) -> str:
    out = tmp / name
    run(CONFIGS[name], out, cache)
    return f"{name:30s} " + " ".join(f"{f.split('.')[0]}={sha(out / f)}" for f in FILES)


def resume_check(tmp: Path, cache: Path) -> str:
    """Kill a run once its epoch-1 checkpoint exists, resume it, compare with the whole run."""
    import signal
    import time

    args = ["rule=bp", "neuron=snntorch_lif", *LIF, "data.augment=true",
            "checkpoints=[0,1,2,3]"]
    run(args, tmp / "whole", cache)
    killed = tmp / "killed"
    proc = run(args, killed, cache, wait=False)
    while not (killed / "checkpoints" / "epoch_1.pt").exists():
        if proc.poll() is not None:
            return "resume: run ended before the kill (machine too fast?)"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = run(args, killed, cache)
    said = "resuming" in resumed.stderr + resumed.stdout
    same = all(sha(tmp / "whole" / f) == sha(killed / f) for f in FILES)
    return f"resume: said_resuming={said} identical_to_uninterrupted={same}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=None, choices=sorted(CONFIGS))
    parser.add_argument("--no-resume", action="store_true")
    args = parser.parse_args()
    names = args.only or list(CONFIGS)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        cache = tmp / "cache"
        run(["rule=untrained"], tmp / "warm", cache)  # generate the synthetic data once
        with ThreadPoolExecutor(args.jobs) as pool:
            for line in pool.map(lambda n: fingerprint(n, tmp, cache), names):
                print(line, flush=True)
        if not args.no_resume:
            print(resume_check(tmp, cache), flush=True)


if __name__ == "__main__":
    main()

"""The 92-image replication (issue 18), end to end from a clean checkout: run the jobs, then write
``docs/results/cichy92/``. Every stage is resumable: a finished job is skipped (marker file), a
killed training job resumes from its last checkpoint (snnrsa's own resume).

Finished jobs are also recorded in the results folder (``jobs.json``, with their scores and
tables): on a fresh machine a job recorded there with the same overrides counts as done, so the
replication goes on from what is committed (a job that scores checkpoints still needs its
training job's folder on this machine). A new ``--out`` folder starts over.

Stages:
  headline    epochs 0 and 1 of every rule and seed, trained, scored at 224 px; then the same
              checkpoints re-scored at 32 px, the training resolution (evaluate_from, no training)
  readout     the headline checkpoints re-scored at 224 px with spatial read-outs instead of the
              study's GAP: rsa.layer_pooling=none (every conv unit, position kept) and
              rsa.layer_pooling=grid (each conv map averaged to a 4 x 4 grid, position kept coarsely)
  trajectory  checkpoints 0 1 2 5 10 20 30 40: every seed for bp, the first two for the other
              trained rules (the untrained network is the headline's epoch 0); also the encoding
              swap on real fMRI (experiment=encoding_swap's arms under this protocol): BP on the
              LIF backbone with Poisson and latency input beside bp (rate) and bp_lif (analog)
  summarize   scores.csv.gz (every score, long and tidy), snnrsa-summarize's tables, tests and
              figures per part, LOSO noise ceilings, stimulus-bootstrap 95 % CIs of the epoch 0 -
              epoch 1 differences, partial RSA controlling for the pixel RDM, RESULTS.md
  all         the four in order

  python tools/replicate_cichy92.py --dry-run                   # jobs and estimated cost
  nice -n 10 python tools/replicate_cichy92.py --stage headline --jobs 1 --threads 2
  python tools/replicate_cichy92.py --stage summarize
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's snnrsa (tools/ are run as scripts)
sys.path.insert(0, str(REPO / "tools"))

from replicate_analysis import ENCODING_ARMS, ledger, summarize_all  # noqa: E402

SEEDS = (42, 123, 456, 789, 1337)
# a LIF network's activity at 224 px (every layer, T = 8 steps) takes hundreds of MB per image:
# score 8 images at a time (64 at a time was killed for memory at 13.6 GB on a 23 GB machine)
SPIKING_AT_224 = ["rsa.eval_batch_size=8"]
# rule label -> overrides on experiment=replicate_cichy92: the study's rules as published, then
# snnrsa's own (canonical PC, canonical spiking STDP, BP on the LIF backbone with analog input)
RULES: dict[str, list[str]] = {
    "untrained": ["study_rule=untrained"],
    "bp": ["study_rule=bp"],
    "fa": ["study_rule=fa"],
    "pc_published": ["study_rule=pc_published"],
    "stdp_published": ["study_rule=stdp_published"],
    "pc": ["study_rule=pc"],
    "stdp": ["rule=stdp", "neuron=snntorch_lif", "encoding=latency", *SPIKING_AT_224],
    "bp_lif": ["study_rule=bp", "+study_input=lif_analog", *SPIKING_AT_224],
    "bp_lif_poisson": ["study_rule=bp", "+study_input=lif_poisson", *SPIKING_AT_224],
    "bp_lif_latency": ["study_rule=bp", "+study_input=lif_latency", *SPIKING_AT_224],
}  # ENCODING_ARMS (the encoding swap's spike-input arms) run in the trajectory stage only
ALL_SEEDS_IN_TRAJECTORY = ("bp",)  # the other trained rules: the first two seeds
TRAJECTORY_SEEDS = 2
TRAJECTORY = (0, 1, 2, 5, 10, 20, 30, 40)
HEADLINE = (0, 1)
STAGES = ("headline", "readout", "trajectory", "summarize")
# Cost model for --dry-run, in seconds on 2 idle cores, measured with this script (headline seeds
# 789 and 1337 on 8,000 CIFAR images, train.csv seconds / eval_seconds, one job at a time):
# training per 1,000 images and epoch; the held-out test (32 px) per 1,000 images; one
# checkpoint's scoring of the 92 images at 224 px (spiking rules 8 at a time; STDP's includes its
# linear probe). Canonical STDP trains layer by layer, so its epochs cost unevenly.
TRAIN_S_PER_1000: dict[str, float] = {
    "untrained": 0.0, "bp": 1.0, "fa": 1.0, "pc_published": 4.5, "stdp_published": 1.5,
    "pc": 7.2, "stdp": 1.6, "bp_lif": 6.3, "bp_lif_poisson": 6.3, "bp_lif_latency": 6.3,
}
TEST_S_PER_1000: dict[str, float] = {
    "untrained": 0.25, "bp": 0.25, "fa": 0.25, "pc_published": 3.4, "stdp_published": 0.35,
    "pc": 0.25, "stdp": 0.0, "bp_lif": 1.4, "bp_lif_poisson": 1.4, "bp_lif_latency": 1.4,
}
EVAL_S: dict[str, float] = {
    "untrained": 1.7, "bp": 1.5, "fa": 1.5, "pc_published": 14.0, "stdp_published": 2.0,
    "pc": 1.6, "stdp": 130.0, "bp_lif": 13.0, "bp_lif_poisson": 13.0, "bp_lif_latency": 13.0,
}
STARTUP_S = 10.0  # imports, the CIFAR JPEG subset (8,000 + 2,000 images) and the brain RDMs
SPATIAL_FACTOR = 1.5  # rsa.layer_pooling=none: RDMs over every unit
N_TEST = 2000  # the shared subset's held-out images


@dataclass
class Job:
    """One snnrsa run: its folder under the runs root, its overrides, and what it waits for."""

    name: str  # e.g. headline/bp_seed42
    rule: str
    overrides: list[str]
    checkpoints: tuple[int, ...]
    n_train: int
    source: str | None = None  # evaluate_from: the training job whose checkpoints it scores
    spatial: bool = False
    resolution: int = 224
    seconds: float = field(default=0.0, init=False)

    def estimate(self, n_test: int | None = None) -> float:
        """Seconds on 2 idle cores by the cost model above (scoring scales with the pixels)."""
        scale = (SPATIAL_FACTOR if self.spatial else 1.0) * (self.resolution / 224) ** 2
        evals = len(self.checkpoints) * EVAL_S[self.rule] * scale
        if self.source:  # scoring only
            return STARTUP_S + evals
        tests = len(self.checkpoints) * (n_test or N_TEST) / 1000 * TEST_S_PER_1000[self.rule]
        trained = max(self.checkpoints) * self.n_train / 1000 * TRAIN_S_PER_1000[self.rule]
        return STARTUP_S + trained + tests + evals


def base_overrides(args: argparse.Namespace, rule: str, seed: int) -> list[str]:
    data = Path(args.data).resolve()
    out = ["experiment=replicate_cichy92", *RULES[rule], "data=imagefolder",
           f"data.train_dir={data / 'train'}", f"data.test_dir={data / 'test'}",
           f"data.n_train={args.n_train}", f"seed={seed}", "progress=false",
           f"brain.root={Path(args.brain).resolve()}"]
    if args.n_test:
        out.append(f"data.n_test={args.n_test}")
    return out


def job_list(args: argparse.Namespace, stage: str) -> list[Job]:
    """The jobs of one stage for the selected rules and seeds, in run order (trainings first)."""
    runs = Path(args.runs).resolve()
    jobs: list[Job] = []
    for rule in args.rules:
        for i, seed in enumerate(args.seeds):
            base = base_overrides(args, rule, seed)
            epochs = (0,) if rule == "untrained" else HEADLINE  # an untrained rule has epoch 0
            head = f"headline/{rule}_seed{seed}"
            source = f"evaluate_from={runs / head}"
            if stage in ("headline", "readout") and rule in ENCODING_ARMS:
                continue
            if stage == "headline":
                jobs.append(Job(head, rule, [*base, f"checkpoints={list(epochs)}"], epochs,
                                args.n_train))
                jobs.append(Job(f"headline_res32/{rule}_seed{seed}", rule,
                                [*base, source, "brain.resolution=32"], epochs, args.n_train,
                                source=head, resolution=32))
            elif stage == "readout":
                jobs.append(Job(f"readout/{rule}_seed{seed}", rule,
                                [*base, source, "rsa.layer_pooling=none"], epochs,
                                args.n_train, source=head, spatial=True))
                jobs.append(Job(f"readout_grid/{rule}_seed{seed}", rule,
                                [*base, source, "rsa.layer_pooling=grid"], epochs,
                                args.n_train, source=head))
            elif stage == "trajectory" and rule != "untrained" and (
                    rule in ALL_SEEDS_IN_TRAJECTORY or i < TRAJECTORY_SEEDS):
                cps = tuple(args.checkpoints)
                jobs.append(Job(f"trajectory/{rule}_seed{seed}", rule,
                                [*base, f"checkpoints={list(cps)}", "test_every=0"], cps,
                                args.n_train))
    return sorted(jobs, key=lambda j: j.source is not None)


def marker(runs: Path, job: Job) -> Path:
    return runs / job.name / "replicate_done.json"


def same_job(a: list[str], b: list[str]) -> bool:
    """Equal overrides, evaluate_from compared by the training job's name (part/rule_seedN), not
    by the runs root it lay under."""
    def key(o: str) -> str:
        return "evaluate_from=" + "/".join(Path(o.partition("=")[2]).parts[-2:]) \
            if o.startswith("evaluate_from=") else o
    return list(map(key, a)) == list(map(key, b))


def is_done(runs: Path, job: Job, recorded: dict[str, dict]) -> bool:
    """Finished with these overrides, here or in the results folder's ledger (a different
    n_train or data path reruns it)."""
    path = marker(runs, job)
    if path.is_file() and json.loads(path.read_text())["overrides"] == job.overrides:
        return True
    return same_job(recorded.get(job.name, {}).get("overrides", []), job.overrides)


def run_job(runs: Path, job: Job, threads: int) -> bool:
    """One snnrsa process (output to job.log in its folder); True when it succeeded."""
    out = runs / job.name
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    with open(out / "job.log", "a") as log:
        proc = subprocess.run([sys.executable, "-m", "snnrsa", *job.overrides,
                               f"hydra.run.dir={out}"], cwd=REPO, env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    job.seconds = time.perf_counter() - t0
    if proc.returncode == 0:
        tmp = marker(runs, job).with_suffix(".tmp")
        tmp.write_text(json.dumps({"overrides": job.overrides, "seconds": job.seconds}))
        tmp.rename(marker(runs, job))
    print(f"{'done' if proc.returncode == 0 else 'FAILED'} {job.name} in {job.seconds:.0f} s"
          + ("" if proc.returncode == 0 else f" (see {out / 'job.log'})"), flush=True)
    return proc.returncode == 0


def check_configs(jobs: list[Job]) -> None:
    """Compose and validate every job's config before any work (a bad override fails here,
    naming the job and the key, not hours later)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    from snnrsa.config import ConfigError, resolve

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for job in jobs:
            try:
                resolve(compose("config", overrides=[o for o in job.overrides
                                                     if not o.startswith("evaluate_from=")]))
            except (ConfigError, ValueError, HydraException) as err:
                raise SystemExit(f"{job.name}: invalid configuration: {err}") from None


def run_stage(args: argparse.Namespace, jobs: list[Job]) -> list[str]:
    """Training jobs first, then the jobs that score their checkpoints; names of failures."""
    runs, recorded = Path(args.runs).resolve(), ledger(Path(args.out))
    check_configs([j for j in jobs if not is_done(runs, j, recorded)])
    failed: list[str] = []
    for wave in ([j for j in jobs if j.source is None], [j for j in jobs if j.source]):
        todo = [j for j in wave if not is_done(runs, j, recorded)]
        blocked = [j for j in todo if j.source and not (runs / j.source / "replicate_done.json")
                   .is_file()]
        failed += [f"{j.name} (its training job {j.source} has no finished run folder here: "
                   "it needs the checkpoints)" for j in blocked]
        todo = [j for j in todo if j not in blocked]
        print(f"{len(wave) - len(todo) - len(blocked)} of {len(wave)} jobs already done; "
              f"running {len(todo)}", flush=True)
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            ok = list(pool.map(lambda j: run_job(runs, j, args.threads), todo))
        failed += [j.name for j, good in zip(todo, ok) if not good]
    return failed


def print_plan(args: argparse.Namespace, stages: list[str]) -> None:
    """The job list with the estimated cost of what is left (cost model: 2 cores)."""
    runs, recorded = Path(args.runs).resolve(), ledger(Path(args.out))
    total = 0.0
    for stage in stages:
        jobs = job_list(args, stage) if stage != "summarize" else []
        left = [j for j in jobs if not is_done(runs, j, recorded)]
        cost = sum(j.estimate(args.n_test) for j in left)
        total += cost
        print(f"== {stage}: {len(jobs)} jobs, {len(jobs) - len(left)} done, "
              f"~{cost / 3600:.1f} h left on 2 cores")
        for j in jobs:
            state = "done" if j not in left else f"~{j.estimate(args.n_test) / 60:.1f} min"
            print(f"  {j.name:38s} epochs {','.join(map(str, j.checkpoints)):22s} {state}")
    print(f"total left ~{total / 3600:.1f} h of 2-core time (one job at a time with --threads 2; "
          f"--jobs N --threads 1 runs N side by side)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=[*STAGES, "all"], default="all")
    ap.add_argument("--rules", default=",".join(RULES), help=f"subset of {','.join(RULES)}")
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    ap.add_argument("--checkpoints", default=",".join(map(str, TRAJECTORY)),
                    help="trajectory checkpoints")
    ap.add_argument("--n-train", type=int, default=8000, help="CIFAR training subset (the study)")
    ap.add_argument("--n-test", type=int, default=None, help="held-out images (default: all)")
    ap.add_argument("--jobs", type=int, default=1, help="jobs side by side")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per job")
    ap.add_argument("--data", default=str(REPO.parent / "shared/data/cifar10_subset"),
                    help="image folder with train/ and test/ (class sub-folders)")
    ap.add_argument("--brain", default=os.environ.get(
        "SNNRSA_CICHY92", str(REPO.parent / "shared/data/cichy92_algonauts2019")),
                    help="the 92-image set (target_fmri.mat, images/)")
    ap.add_argument("--runs", default=str(REPO / "runs/replicate_cichy92"))
    ap.add_argument("--out", default=str(REPO / "docs/results/cichy92"))
    ap.add_argument("--n-boot", type=int, default=1000, help="stimulus-bootstrap resamples")
    ap.add_argument("--dry-run", action="store_true", help="print the jobs and their cost")
    args = ap.parse_args(argv)
    args.rules = [r for r in args.rules.split(",") if r]
    unknown = [r for r in args.rules if r not in RULES]
    if unknown:
        ap.error(f"--rules: unknown {unknown}; choose from {list(RULES)}")
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    args.checkpoints = sorted({int(e) for e in args.checkpoints.split(",") if e})
    for path, what in ((Path(args.data) / "train", "--data"), (Path(args.brain), "--brain")):
        if not path.is_dir():
            ap.error(f"{what}: {path} is not a folder")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stages = list(STAGES) if args.stage == "all" else [args.stage]
    if args.dry_run:
        print_plan(args, stages)
        return 0
    failed: list[str] = []
    for stage in stages:
        if stage == "summarize":
            written = summarize_all(Path(args.runs).resolve(), Path(args.out).resolve(),
                                    Path(args.brain).resolve(), args.n_boot)
            print(f"summarize: wrote {len(written)} files to {args.out}")
        else:
            print(f"== stage {stage}", flush=True)
            failed += run_stage(args, job_list(args, stage))
    if failed:
        print("failed or blocked:\n  " + "\n  ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

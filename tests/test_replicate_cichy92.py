"""tools/replicate_cichy92.py end to end on a tiny configuration (64 training images, one seed,
untrained and bp, epochs 0 and 1): the job list, resumption, and docs/results/cichy92's files,
checked against the reference values measured on the shared files (data-formats.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import SHARED, needs_shared

REPO = Path(__file__).resolve().parents[1]
CIFAR = SHARED / "cifar10_subset"
CICHY = SHARED / "cichy92_algonauts2019"
sys.path.insert(0, str(REPO / "tools"))


@needs_shared(CIFAR)
@needs_shared(CICHY)
def test_dry_run_lists_every_job_with_its_cost(tmp_path: Path, capsys) -> None:
    import replicate_cichy92 as rep

    assert rep.main(["--dry-run", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "== headline: 80 jobs, 0 done" in text  # 8 rules x 5 seeds, trained + at 32 px
    assert "== readout: 80 jobs" in text  # 8 rules x 5 seeds, no pooling and a 4 x 4 grid
    assert "== trajectory: 21 jobs" in text  # bp 5 seeds, 8 other trained rules / arms 2 each
    assert "trajectory/bp_lif_latency_seed123" in text and "headline/bp_lif_latency" not in text
    assert "headline/untrained_seed42" in text and "epochs 0 " in text


@needs_shared(CIFAR)
@needs_shared(CICHY)
def test_headline_and_summary_end_to_end(tmp_path: Path, capsys) -> None:
    import replicate_cichy92 as rep

    runs, out = tmp_path / "runs", tmp_path / "cichy92"
    args = ["--n-train", "64", "--n-test", "64", "--seeds", "42", "--rules", "untrained,bp",
            "--jobs", "2", "--threads", "1", "--runs", str(runs), "--out", str(out)]
    assert rep.main(["--stage", "headline", *args]) == 0
    assert rep.main(["--stage", "headline", *args]) == 0  # resumed: nothing left to run
    assert "2 of 2 jobs already done; running 0" in capsys.readouterr().out
    unfinished = runs / "trajectory" / "bp_seed42"  # a job still training: no marker yet
    unfinished.mkdir(parents=True)
    (unfinished / "rsa.csv").write_bytes((runs / "headline" / "bp_seed42" / "rsa.csv").read_bytes())
    assert rep.main(["--stage", "summarize", "--n-boot", "20", *args]) == 0

    scores = pd.read_csv(out / "scores.csv.gz")
    assert set(scores.part) == {"headline", "headline_res32"}
    assert set(scores[scores.part == "headline_res32"].resolution) == {32}
    untrained = scores[(scores.rule == "untrained") & (scores.layer == "conv1")
                       & (scores.resolution == 224)]
    assert untrained[untrained.roi == "EVC"].rho.mean() == pytest.approx(-0.052, abs=0.005)
    pixel = pd.read_csv(out / "pixel_reference.csv").set_index("roi").rho
    assert pixel["EVC"] == pytest.approx(0.180, abs=0.005)  # data-formats.md
    assert pixel["IT"] == pytest.approx(0.147, abs=0.005)
    ceiling = pd.read_csv(out / "noise_ceiling.csv").set_index("roi")
    assert ceiling.lower["EVC"] == pytest.approx(0.239, abs=0.01)
    assert ceiling.lower["IT"] == pytest.approx(0.449, abs=0.01)
    boot = pd.read_csv(out / "bootstrap_epoch0_minus_epoch1.csv")
    assert set(boot.part) == {"headline", "headline_res32"} and (boot.rule == "bp").all()
    assert (boot.ci_low <= boot.ci_high).all() and boot.n_boot.min() > 0
    partial = pd.read_csv(out / "partial_rsa.csv")
    assert partial.partial_rho.between(-1, 1).all() and len(partial) == 2 * (4 * 2 * (1 + 2))
    for name in ("headline/tests.csv", "headline/report.md", "headline/evc_trajectory.png",
                 "results.png", "wall_time.csv", "RESULTS.md"):
        assert (out / name).stat().st_size > 0, name
    assert not list(out.rglob("*.pdf"))
    assert sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) < 5e6
    results = (out / "RESULTS.md").read_text()
    assert "| GAP, 32 px | bp | EVC |" in results
    assert "| bp | EVC |" in results and "| untrained | EVC |" in results  # the README table
    wall = pd.read_csv(out / "wall_time.csv")
    assert set(wall.part) == {"headline", "headline_res32"} and (wall.job_seconds > 0).all()
    acc = pd.read_csv(out / "accuracy.csv")
    assert set(acc.rule) == {"bp", "untrained"} and set(acc[acc.rule == "bp"].epoch) == {0, 1}
    assert acc.test_acc.between(0, 1).all()
    assert sorted(rep.ledger(out)) == ["headline/bp_seed42", "headline/untrained_seed42",
                                       "headline_res32/bp_seed42", "headline_res32/untrained_seed42"]

    # a fresh machine (no run folders): the ledger counts the jobs as done, and the summary
    # keeps every recorded row
    fresh = [*args[:-4], "--runs", str(tmp_path / "fresh"), "--out", str(out)]
    before = {n: (out / n).read_bytes() for n in ("scores.csv.gz", "wall_time.csv",
                                                  "bootstrap_epoch0_minus_epoch1.csv",
                                                  "partial_rsa.csv", "noise_ceiling.csv",
                                                  "accuracy.csv")}
    capsys.readouterr()
    assert rep.main(["--stage", "headline", *fresh]) == 0
    assert capsys.readouterr().out.count("2 of 2 jobs already done; running 0") == 2
    assert rep.main(["--stage", "summarize", "--n-boot", "20", *fresh]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out / "scores.csv.gz"), scores)
    for name, old in before.items():
        assert (out / name).read_bytes() == old or name == "scores.csv.gz", name
    # a new job beside the recorded ones: its scores join them
    assert rep.main(["--stage", "headline", *fresh[:6], "--rules", "fa", *fresh[8:]]) == 0
    assert rep.main(["--stage", "summarize", "--n-boot", "20", *fresh]) == 0
    assert set(pd.read_csv(out / "scores.csv.gz").rule) == {"untrained", "bp", "fa"}
    assert set(pd.read_csv(out / "bootstrap_epoch0_minus_epoch1.csv").rule) == {"bp", "fa"}

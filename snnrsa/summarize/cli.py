"""The ``snnrsa-summarize`` command: inputs -> ``summary/`` (tables, tests, report, figures)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from snnrsa.summarize.figures import (
    make_figures,
    rule_log_figures,
)
from snnrsa.summarize.loading import (
    DEFAULT_FIXED_MAP,
    load_scores,
    rule_logs,
)
from snnrsa.summarize.report import (
    write_report,
)
from snnrsa.summarize.statistics import (
    deltas,
    frozen_checkpoints,
    noise_ceilings,
    run_tests,
    seed_scores,
    trajectories,
)


def parse_map(text: str | None) -> dict[str, str] | None:
    if not text:
        return None
    pairs = [p.split("=", 1) for p in text.split(",") if p.strip()]
    if any(len(p) != 2 for p in pairs):
        raise ValueError(f"--fixed-map wants ROI=layer,ROI=layer, got {text!r}")
    return {k.strip(): v.strip() for k, v in pairs}


def default_out(paths: Sequence[str | Path]) -> Path:
    ps = [Path(p).resolve() for p in paths]
    if len(ps) == 1:
        return (ps[0] if ps[0].is_dir() else ps[0].parent) / "summary"
    common = Path(os.path.commonpath([str(p if p.is_dir() else p.parent) for p in ps]))
    return common / "summary"


def summarize(paths: Sequence[str | Path], out: str | Path | None = None,
              fixed_map: Mapping[str, str] | None = None, reference: str = "bp",
              figures: bool = True) -> dict[str, pd.DataFrame]:
    """Read, analyse and write ``summary/``; returns the tables."""
    table, runs = load_scores(paths)
    out = Path(out) if out is not None else default_out(paths)
    out.mkdir(parents=True, exist_ok=True)
    scores = seed_scores(table, fixed_map)
    traj = trajectories(scores)
    dlt = deltas(scores)
    tests = run_tests(scores, reference, frozen_checkpoints(table))
    ceil = noise_ceilings(runs)
    traj.to_csv(out / "trajectories.csv", index=False)
    dlt.to_csv(out / "deltas.csv", index=False)
    tests.to_csv(out / "tests.csv", index=False)
    if len(ceil):
        ceil.to_csv(out / "noise_ceiling.csv", index=False)
    logs = rule_logs(runs)
    if len(logs):
        logs.to_csv(out / "rule_log.csv", index=False)
    figs = make_figures(out, scores, traj, dlt, ceil, reference) if figures else []
    if figures:
        figs += rule_log_figures(out, logs)
    write_report(out, table, traj, dlt, tests, ceil, [f for f in figs if f.endswith(".png")],
                 [str(p) for p in paths], reference)
    return {"table": table, "scores": scores, "trajectories": traj, "deltas": dlt,
            "tests": tests, "noise_ceiling": ceil, "rule_log": logs}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="snnrsa-summarize",
        description="Tables, tests, a report and figures from snnrsa run directories, sweep "
                    "folders or any long table with columns rule, layer, roi, subject, seed, "
                    "epoch, rho.")
    ap.add_argument("paths", nargs="+", help="sweep folders, run directories or CSV tables")
    ap.add_argument("-o", "--out", help="output folder (default: <input>/summary)")
    ap.add_argument("--fixed-map", help="ROI=layer pairs for the fixed-layer convention, e.g. "
                    "V1=conv1,LOC=conv3 (default: " +
                    ",".join(f"{k}={v}" for k, v in DEFAULT_FIXED_MAP.items()) + ")")
    ap.add_argument("--reference", default="bp", help="rule the others are tested against")
    ap.add_argument("--no-figures", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        res = summarize(args.paths, args.out, parse_map(args.fixed_map), args.reference,
                        not args.no_figures)
    except (FileNotFoundError, ValueError) as err:
        print(f"snnrsa-summarize: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else default_out(args.paths)
    print((out / "report.md").read_text())
    print(f"\nWritten to {out} ({len(res['tests'])} tests)")
    return 0

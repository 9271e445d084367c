"""The diagnosis and benchmark tools of issue 15 run end to end on the code they describe (the
diagnosis tool broke once when the rules' optimiser moved, and nothing noticed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO, SHARED, needs_shared

CIFAR = SHARED / "cifar10_subset"


def _tool(*args: str) -> str:
    out = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                         timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_diagnose_spiking_bp_prints_the_layer_table():
    out = _tool("tools/diagnose_spiking_bp.py", "--every", "100")
    rows = [ln.split()[0] for ln in out.splitlines() if ln.startswith("  ")]
    assert rows == ["conv1", "conv2", "conv3", "fc1", "head"]  # one table, every layer
    assert "held-out accuracy" in out.splitlines()[-1]


@needs_shared(CIFAR)
def test_bench_encodings_records_the_machine_and_resumes(tmp_path):
    out = tmp_path / "bench.jsonl"
    args = ["tools/bench_encodings.py", "--epochs", "1", "--train-images", "256", "--test-images",
            "256", "--data", str(CIFAR), "--out", str(out)]
    first = _tool(*args, "--cases", "snntorch-analog-4")
    rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert [r["case"] for r in rows] == ["rate", "snntorch-analog-4"]  # the reference is run too
    assert all(r["machine"].endswith("1 threads") and len(r["load"]) == 2 for r in rows)
    again = _tool(*args, "--cases", "snntorch-analog-4")
    assert len(out.read_text().splitlines()) == 2  # nothing run twice
    assert again.splitlines()[-4:] == first.splitlines()[-4:]  # the same table from the file

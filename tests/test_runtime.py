"""keep_freed_memory: the large tensors of a spiking training step are reused from one step to
the next instead of being unmapped and page-faulted (and zeroed by the kernel) again."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc-only setting")

PROBE = """
import resource, sys, torch
from snnrsa.model.backbone import Backbone
from snnrsa.config import BackboneConfig, NeuronConfig
from snnrsa.runtime import keep_freed_memory
print("set", keep_freed_memory() if sys.argv[1] == "1" else None)
torch.manual_seed(0)
net = Backbone(BackboneConfig(), NeuronConfig(name="snntorch_lif", time_steps=8), 10).train()
x = torch.bernoulli(torch.full((8, 64, 3, 32, 32), 0.5))  # conv1 maps: 67 MB per tensor
faults = []
for _ in range(7):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    head, _ = net(x)
    head.mean(0).logsumexp(1).sum().backward()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
print("faults", min(faults[3:]))
"""


def _probe(tune: bool, extra_env: dict | None = None) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(extra_env or {})
    out = subprocess.run([sys.executable, "-c", PROBE, "1" if tune else "0"], env=env,
                         capture_output=True, text=True, check=True).stdout.split("\n")
    return out[0].split()[1], int(out[1].split()[1])


def test_training_step_memory_is_reused_not_faulted_again() -> None:
    state, tuned = _probe(True)
    _, default = _probe(False)
    assert state == "True"
    assert default > 30_000  # glibc unmapped the large tensors and the kernel faulted them again
    assert tuned < default / 20


def test_user_malloc_settings_win() -> None:
    state, faults = _probe(True, {"MALLOC_MMAP_THRESHOLD_": "65536"})
    assert state == "False" and faults > 30_000

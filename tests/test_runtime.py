"""keep_freed_memory: large freed tensors are reused by the next allocations instead of being
unmapped and page-faulted (and zeroed by the kernel) again. (The first few reuses can miss:
torch's 64-byte aligned request needs a little more than the freed block; the heap settles after
a few steps.)"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc-only setting")

PROBE = """
import resource, sys, torch
from snnrsa.runtime import keep_freed_memory
print("set", keep_freed_memory() if sys.argv[1] == "1" else None)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):  # a training loop: the same large tensors every step (64 MiB, all touched)
    f0 = faults()
    x = torch.ones(16 << 20)
    del x
print("faults", faults() - f0)
"""


def _probe(tune: bool, extra_env: dict | None = None) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(extra_env or {})
    out = subprocess.run([sys.executable, "-c", PROBE, "1" if tune else "0"], env=env,
                         capture_output=True, text=True, check=True).stdout.split("\n")
    return out[0].split()[1], int(out[1].split()[1])


def test_freed_tensors_are_reused_not_faulted_again() -> None:
    state, tuned = _probe(True)
    _, default = _probe(False)
    assert state == "True"
    assert default > 10_000  # 64 MiB / 4 KiB pages: glibc unmapped and the kernel faulted it again
    assert tuned < default / 20


def test_user_malloc_settings_win() -> None:
    state, faults = _probe(True, {"MALLOC_MMAP_THRESHOLD_": "65536"})
    assert state == "False" and faults > 10_000

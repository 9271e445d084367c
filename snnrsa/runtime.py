"""Process settings for CPU speed that change no result.

glibc serves every allocation above its mmap threshold (128 KiB, raised dynamically only up to
32 MiB) with a fresh ``mmap`` and returns it on free, so each of the tens of large tensors of a
spiking training step (a ``[T, B, C, H, W]`` map at T = 16, batch 64 is 134 MB) is page-faulted
and zeroed by the kernel again at every step, a large share of a BP step's time on CPU
(``tools/bench_backbone.py`` prints its CPU time in user and system mode; ``--system-allocator``
runs without this setting). ``keep_freed_memory`` makes
glibc keep freed memory in the heap for reuse instead; the price is that the process holds its
peak memory until it exits, which a training job reaches at every step anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_done = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds so that large freed blocks are reused, not
    unmapped (once per process). Returns whether the setting is in effect. Does nothing when
    the C library is not glibc or when the user set any ``MALLOC_*_`` variable (their choice)."""
    global _done
    if _done:
        return True
    if any(k.startswith("MALLOC_") and k.endswith("_") for k in os.environ):
        log.debug("MALLOC_* environment variables set: allocator left as configured")
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False  # not glibc (macOS, musl without mallopt): nothing to tune
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # 1 GiB where glibc allows it; older glibc caps the threshold at 32 MiB (still > one step's maps)
    if not (mallopt(_M_MMAP_THRESHOLD, 1 << 30) or mallopt(_M_MMAP_THRESHOLD, 32 << 20)):
        return False
    mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    _done = True
    return True

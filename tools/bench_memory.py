"""BPTT memory and its bound: peak memory and step time of one BP training step, full BPTT vs
``backbone.time_checkpoint=k`` (conv blocks recomputed k time steps at a time in backward).

The study network (conv 32/64/128, BatchNorm, FC 512, head; conf/backbone/study.yaml) with a LIF
neuron (``--neuron``, fast impl), batch 64, 32 px input (the study's CIFAR training resolution),
Poisson encoding (every frame differs, so conv1 runs T times; analog input convolves once), BP
rule (Adam, gradient clipping): ``rule.train_batch`` = forward, backward, optimiser step.

Memory, one child process per case (each measures its first training step):
  CPU   peak RSS growth over the step (VmHWM after resetting it to the current RSS; glibc is told
        to mmap blocks >= 64 KiB so that freed tensors leave RSS and the high-water mark is the
        live peak, not heap leftovers)
  CUDA  torch.cuda.max_memory_allocated over the step, minus the memory allocated before it
Time: median of --reps interleaved rounds (one step per case per round) after one warm-up step
each, all cases in this process, so the time ratios share one machine state (the load average
is printed; only ratios within one run mean anything).

    python tools/bench_memory.py                         # T = 16, 32; k = off, 8, 4, 2
    python tools/bench_memory.py --steps 8 --chunks 2 --reps 1 --batch 16   # smoke test
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import subprocess
import sys
import time
from math import nan
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from snnrsa.config import resolve
from snnrsa.rules import build_network, make_rule

CONF = Path(__file__).resolve().parents[1] / "conf"


def build(neuron: str, T: int, chunk: int, batch: int, device: str, encoding: str):
    """A BP rule on the study network, and one fixed batch of images and labels."""
    overrides = [
        f"neuron={neuron}",
        f"neuron.time_steps={T}",
        f"encoding={encoding}",
        f"backbone.time_checkpoint={chunk}",
        "rule=bp",
        f"device={device}",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = resolve(compose("config", overrides=overrides))
    torch.manual_seed(0)
    net = build_network(cfg, 10).to(device).train()
    rule = make_rule(cfg.rule, net, n_epochs=1)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(batch, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    return rule, x, y


def rss_peak_reset() -> int:
    """Reset this process's peak RSS to its current RSS (Linux ``clear_refs`` 5) and return the
    current RSS in bytes. ``ru_maxrss`` cannot be used: Linux carries it across fork + exec, so a
    child would start from the parent's RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kib("VmRSS") * 1024


def rss_peak() -> int:
    """Peak RSS in bytes since the last ``rss_peak_reset`` (``VmHWM``)."""
    return _status_kib("VmHWM") * 1024


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/self/status")


def child(args) -> None:
    """One case: memory growth over the first training step (printed as ``MEM <bytes> <s>``)."""
    torch.set_num_threads(args.threads)
    T, chunk = (int(v) for v in args.child.split(":"))
    rule, x, y = build(args.neuron, T, chunk, args.batch, args.device, args.encoding)
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        # torch.utils.checkpoint imports torch._dynamo on first use (~150 MiB RSS, once per
        # process): imported before the measurement, which is of activations, not modules
        importlib.import_module("torch._dynamo")

        base = rss_peak_reset()
    t0 = time.perf_counter()
    torch.manual_seed(2)  # Poisson frames
    rule.train_batch(x, y)
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = rss_peak()
    print(f"MEM {peak - base} {time.perf_counter() - t0}", flush=True)


def measure_memory(args, T: int, chunk: int) -> float:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    cmd = [
        sys.executable,
        __file__,
        "--child",
        f"{T}:{chunk}",
        "--neuron",
        args.neuron,
        "--batch",
        str(args.batch),
        "--device",
        args.device,
        "--threads",
        str(args.threads),
        "--encoding",
        args.encoding,
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("MEM ")]
    if not lines:
        sys.exit(f"bench_memory: case T={T} k={chunk} failed:\n{r.stderr[-2000:]}")
    return float(lines[0].split()[1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[16, 32], help="time steps T")
    ap.add_argument(
        "--chunks",
        type=int,
        nargs="+",
        default=[8, 4, 2],
        help="backbone.time_checkpoint values compared with 0 (full BPTT)",
    )
    ap.add_argument("--neuron", default="snntorch_lif", choices=["snntorch_lif", "norse_lif"])
    ap.add_argument("--encoding", default="poisson", choices=["poisson", "analog"])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=2, help="timed rounds after the warm-up")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-time", action="store_true", help="memory only (no timed rounds)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args)
        return
    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"# bench_memory: device={args.device} threads={torch.get_num_threads()} "
        f"neuron={args.neuron} (fast) encoding={args.encoding} batch={args.batch} 32 px, "
        f"BP step (fwd+bwd+Adam), torch={torch.__version__}, load average {load:.2f}"
    )
    mem_kind = "CUDA max_memory_allocated" if cuda else "peak RSS growth"
    rows = []
    for T in args.steps:
        chunks = [0, *[k for k in args.chunks if 0 < k <= T]]
        mem = {k: measure_memory(args, T, k) for k in chunks}
        cases = {k: build(args.neuron, T, k, args.batch, args.device, args.encoding) for k in chunks}
        times: dict[int, list[float]] = {k: [] for k in chunks}
        for rep in range(0 if args.no_time else args.reps + 1):  # round 0 is the warm-up
            for k, (rule, x, y) in cases.items():
                sync()
                t0 = time.perf_counter()
                rule.train_batch(x, y)
                sync()
                if rep:
                    times[k].append(time.perf_counter() - t0)
        for k in chunks:
            t, t0 = (statistics.median(times[k]), statistics.median(times[0])) if times[0] else (nan, nan)
            rows.append((T, k, mem[k], t, mem[0], t0))
        del cases
    print(
        f"\n{'T':>3s} {'time_checkpoint':>15s} {'MiB ' + mem_kind:>30s} {'s/step':>8s} "
        f"{'mem vs full':>12s} {'time vs full':>13s}"
    )
    for T, k, m, t, m0, t0 in rows:
        name = "0 (full BPTT)" if k == 0 else str(k)
        print(f"{T:3d} {name:>15s} {m / 2**20:30.0f} {t:8.2f} {m / m0:12.2f} {t / t0:13.2f}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# load average at the end {load:.2f}")


if __name__ == "__main__":
    main()

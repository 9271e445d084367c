"""Spiking BP training step (forward + backward) vs the convolution bound, and BPTT memory.

Cases, all on the study backbone (conv 32/64/128, FC 512, 32 px), batch 64, one shared weight set:
  bound      the rate network (conv, BN, ReLU, pool, FC) run as T separate passes, summed loss
  rate_folded the rate network on the T*B frames in one folded pass (reference only: shows how much
             of the gain is time folding and how much the neuron costs over a ReLU)
  fast       snnrsa Backbone, time-folded convs, neuron.impl=fast (the default: on CPU compiled LIF
             kernels, with each conv block's max-pool fused in; snnrsa/neurons/_cpu_kernels.py)
  folded_lib snnrsa Backbone, time-folded convs, neuron.impl=library (library cell looped in time)
  snntorch   idiomatic snntorch loop: every layer stepped per time step with snn.Leaky
  norse      idiomatic norse loop: every layer stepped per time step with LIFBoxCell
  spikingjelly  SpikingJelly 2.0's multi-step LIFNode (step_mode='m'; on CPU its torch
             implementation: one autograd op, tensor ops per time step, hand-written backward; on
             CUDA the implementation it selects itself, reported) between the same conv/BN/pool/FC
             modules, folded over time as its SeqToANNContainer does; settings mapped from
             snnrsa's neuron (see SJ_MAPPING). Skipped with a message when not installed.
  spikingjelly_cl  the same on channels-last frames, the layout snnrsa's fast path trains in on
             CPU (snnrsa.model.backbone.Backbone._channels_last): separates the layout's share of
             the lead from the neuron kernels' (vs_spikingjelly_channels_last lines)
  fast+ckpt  (--checkpoint K) fast with backbone.time_checkpoint = K (conv blocks recomputed K time
             steps at a time in backward: the BPTT memory bound; tools/bench_memory.py)
Input: Poisson spike frames (every time step differs, so conv1 runs T times as in the bound); with
--encoding analog the first convolution of fast/folded_lib runs once (static input).
Times: median of --reps interleaved rounds after one warm-up (the machine is shared and noisy;
only ratios within one run are meaningful). The process calls snnrsa.runtime.keep_freed_memory as
a snnrsa run does (--system-allocator: glibc as it is; every case then page-faults its large
tensors again at every step). Memory (CPU, a child process per case): bytes saved for
backward (unique storages, counted with saved_tensors_hooks; tensors saved inside a checkpoint are
not seen) and peak RSS growth over the step (VmHWM reset first; ru_maxrss is inherited from the
parent across fork + exec and would start at the parent's RSS; glibc mmaps blocks >= 64 KiB so
freed tensors leave RSS, as in tools/bench_memory.py).

    python tools/bench_backbone.py                 # T = 8 and 16, both backends, memory T = 16, 32
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time
from functools import partial

import torch
import torch.nn.functional as F
from bench_memory import rss_peak, rss_peak_reset  # tools/ is on sys.path when run as a script
from norse.torch import LIFBoxCell, LIFBoxParameters

try:
    from spikingjelly.activation_based import functional as sj_functional
    from spikingjelly.activation_based import neuron as sj_neuron
    from spikingjelly.activation_based import surrogate as sj_surrogate
except ImportError as err:  # optional peer: pip install --no-deps spikingjelly loguru
    sj_neuron = None
    SJ_MISSING = f"spikingjelly not importable ({err}); its rows are skipped"

from snnrsa.config import BackboneConfig, NeuronConfig
from snnrsa.model.backbone import Backbone
from snnrsa.neurons import NORSE_DT
from snnrsa.runtime import keep_freed_memory

CKPT_CHUNK = 4  # backbone.time_checkpoint of the fast+ckpt cases (--checkpoint)


def make(backend: str, impl: str, T: int, device) -> Backbone:
    torch.manual_seed(0)
    return Backbone(BackboneConfig(), NeuronConfig(name=backend, time_steps=T, impl=impl)
                    if "impl" in NeuronConfig.__dataclass_fields__ else
                    _with_impl(NeuronConfig(name=backend, time_steps=T), impl), 10).to(device)


def _with_impl(cfg: NeuronConfig, impl: str) -> NeuronConfig:
    object.__setattr__(cfg, "impl", impl)
    return cfg


def rate_bound_loss(net: Backbone, seq: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """T separate rate-network passes over the same frames (conv, BN, ReLU, pool, FC, head)."""
    loss = 0.0
    for frame in seq:
        x = frame
        for blk in net.blocks:
            x = blk.pool(torch.relu(blk.bn(blk.conv(x))))
        x = x.flatten(1)
        for fc in net.fcs:
            x = torch.relu(fc.linear(x))
        loss = loss + F.cross_entropy(net.head(x), y)
    return loss / seq.shape[0]


def idiomatic_loss(net: Backbone, seq: torch.Tensor, y: torch.Tensor, lib: str) -> torch.Tensor:
    """The library tutorials' way: one time step through the whole network at a time."""
    layers = [*net.blocks, *net.fcs]
    if lib == "snntorch":
        cells = [layer.neuron.lif for layer in layers]
        state = [None] * len(layers)
    else:
        cells = []
        for layer in layers:
            n = layer.neuron
            p = LIFBoxParameters(tau_mem_inv=n.tau_mem_inv, v_th=n.v_th,
                                 v_leak=torch.zeros_like(n.v_th), v_reset=torch.zeros_like(n.v_th),
                                 method="super")
            cells.append((LIFBoxCell(p=p, dt=NORSE_DT), n.input_scale))
        state = [None] * len(layers)
    out = 0.0
    for frame in seq:
        x = frame
        for i, layer in enumerate(layers):
            cur = layer.bn(layer.conv(x)) if i < len(net.blocks) else layer.linear(x)
            if lib == "snntorch":
                mem = torch.zeros_like(cur) if state[i] is None else state[i]
                x, state[i] = cells[i](cur, mem)
            else:
                cell, scale = cells[i]
                x, state[i] = cell(cur * scale, state[i])
            if i < len(net.blocks):
                x = layer.pool(x)
            if i == len(net.blocks) - 1:
                x = x.flatten(1)
        out = out + net.head(x)
    return F.cross_entropy(out / seq.shape[0], y)


SJ_MAPPING = """\
# SpikingJelly mapping: LIFNode(tau=1/(1-beta), decay_input=False, v_threshold=threshold,
#   v_reset=0 (reset=zero), detach_reset=True for snntorch (its reset term is detached) / False
#   for norse ((1 - z) * v differentiated), surrogate SuperSpike(alpha=1) = 1/(1+|h|)^2 =
#   snnrsa's fast_sigmoid slope 1 (atan -> ATan(alpha=slope), same formula).
# Where the models differ: SJ charges h = v - v/tau + x, snnrsa/snntorch beta*v + x (norse
#   v + c*(x*scale - v)): equal in exact arithmetic, float rounding differs unless 1/tau is a
#   power of two (beta = 0.5 below: identical); SJ fires at h >= threshold, the libraries at
#   h > threshold; reset=subtract has no SJ equivalent (SJ subtracts before the next decay, so
#   the subtracted threshold decays; snntorch subtracts it undecayed)."""


def spikingjelly_nodes(cfg: NeuronConfig, backend: str, n: int) -> list:
    """n SpikingJelly multi-step LIF nodes set as close to snnrsa's neuron as SJ allows."""
    surr = (sj_surrogate.ATan(alpha=cfg.surrogate_slope) if cfg.surrogate == "atan"
            else sj_surrogate.SuperSpike(alpha=cfg.surrogate_slope))
    return [sj_neuron.LIFNode(tau=1.0 / (1.0 - cfg.beta), decay_input=False,
                              v_threshold=cfg.threshold, v_reset=0.0, surrogate_function=surr,
                              detach_reset=backend == "snntorch_lif", step_mode="m")
            for _ in range(n)]


def spikingjelly_outputs(net: Backbone, nodes: list, seq: torch.Tensor):
    """SpikingJelly's multi-step network over snnrsa's modules: (head [T, B, K], layer spikes)."""
    sj_functional.reset_net(torch.nn.ModuleList(nodes))
    T, B = seq.shape[:2]

    def fold(f, x):
        return f(x.flatten(0, 1)).unflatten(0, (T, B))

    x, outs = seq, {}
    for i, blk in enumerate(net.blocks):
        x = fold(blk.pool, nodes[i](fold(lambda f, b=blk: b.bn(b.conv(f)), x)))
        outs[f"conv{i + 1}"] = x
    x = x.flatten(2)
    for i, fc in enumerate(net.fcs):
        x = nodes[len(net.blocks) + i](fold(fc.linear, x))
        outs[f"fc{i + 1}"] = x
    return fold(net.head, x), outs


def spikingjelly_loss(net: Backbone, nodes: list, seq, y) -> torch.Tensor:
    head, _ = spikingjelly_outputs(net, nodes, seq)
    return F.cross_entropy(head.mean(0), y)


def spike_check(backend: str, beta: float, T: int, batch: int) -> str:
    """Every layer's spikes of snnrsa's fast path vs SpikingJelly's on the same weights and input."""
    cfg = NeuronConfig(name=backend, time_steps=T, beta=beta)
    torch.manual_seed(0)
    net = Backbone(BackboneConfig(), cfg, 10).train()
    net.channels_last = False  # both on the same NCHW frames: only the neuron models differ
    g = torch.Generator().manual_seed(2)
    imgs = torch.rand(batch, 3, 32, 32, generator=g)
    seq = torch.bernoulli(imgs.unsqueeze(0).expand(T, *imgs.shape), generator=g)
    with torch.no_grad():
        _, ours = net(seq)
        _, theirs = spikingjelly_outputs(net, spikingjelly_nodes(cfg, backend, 4), seq)
    diff = sum(int((ours[k] != theirs[k]).sum()) for k in ours)
    total = sum(v.numel() for v in ours.values())
    rate = sum(float(v.sum()) for v in ours.values()) / total
    verdict = "identical" if diff == 0 else f"{diff} differ"
    return (f"spikes {backend} beta={beta} T={T} batch={batch}: {verdict} "
            f"({total} units x steps, firing rate {rate:.3f})")


def folded_loss(net: Backbone, seq, y, static: bool) -> torch.Tensor:
    head, _ = net(seq, static=static)
    return F.cross_entropy(head.mean(0), y)


def step(fn) -> float:
    t0 = time.perf_counter()
    loss = fn()
    loss.backward()
    return time.perf_counter() - t0


def peak_cuda(fn) -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn().backward()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def saved_bytes(fn) -> int:
    seen: dict[int, int] = {}

    def pack(t):
        if t.device.type != "meta":
            try:
                st = t.untyped_storage()
                seen[st.data_ptr()] = st.nbytes()
            except RuntimeError:
                pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fn()
    loss.backward()
    return sum(seen.values())


def _mem_case(case: str, T: int, batch: int) -> None:
    """Child process: one training step of one case; prints saved-tensor bytes and peak RSS growth."""
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(1)
    imgs = torch.rand(batch, 3, 32, 32, generator=g)
    seq = torch.bernoulli(imgs.unsqueeze(0).expand(T, *imgs.shape), generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    if case == "bound":
        net = make("rate", "fast", 1, "cpu").train()
        fn = lambda: rate_bound_loss(net, seq, y)  # noqa: E731
    else:
        backend, impl = case.split(":")
        net = make(backend, impl.replace("+ckpt", ""), T, "cpu").train()
        net.time_checkpoint = CKPT_CHUNK if impl.endswith("+ckpt") else 0
        fn = lambda: folded_loss(net, seq, y, False)  # noqa: E731
    # no warm-up: the high-water mark of the first step is the step's peak. torch.utils.checkpoint
    # imports torch._dynamo on first use (~150 MiB RSS once per process): imported beforehand
    importlib.import_module("torch._dynamo")

    base = rss_peak_reset()
    t0 = time.perf_counter()
    saved = saved_bytes(fn)
    dt = time.perf_counter() - t0
    print(f"MEM {saved} {rss_peak() - base} {dt}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, nargs="*", default=[8, 16])
    ap.add_argument("--backends", nargs="+", default=["snntorch_lif", "norse_lif"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--encoding", default="poisson", choices=["poisson", "analog"])
    ap.add_argument("--mem-steps", type=int, nargs="*", default=[16, 32])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--checkpoint", type=int, default=4, metavar="K",
                    help="backbone.time_checkpoint of the fast+ckpt memory case (and timed with "
                         "--time-checkpoint); 0 = leave that case out")
    ap.add_argument("--time-checkpoint", action="store_true",
                    help="also time fast + backbone.time_checkpoint=K (BPTT memory bound)")
    ap.add_argument("--system-allocator", action="store_true",
                    help="leave glibc's allocator as it is (snnrsa runs call keep_freed_memory)")
    ap.add_argument("--no-spike-check", dest="spike_check", action="store_false",
                    help="skip the snnrsa vs SpikingJelly spike comparison (CPU, batch 16, T=8)")
    ap.add_argument("--mem-case", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    global CKPT_CHUNK
    CKPT_CHUNK = args.checkpoint
    if args.mem_case:
        T, case = args.mem_case.split("@")
        _mem_case(case, int(T), args.batch)
        return
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    tuned = False if args.system_allocator else keep_freed_memory()
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    static = args.encoding == "analog"
    print(f"# bench_backbone: device={dev} threads={torch.get_num_threads()} batch={args.batch} "
          f"encoding={args.encoding} torch={torch.__version__} keep_freed_memory={tuned}")
    ratios, sj_ratios = [], []
    if sj_neuron is None:
        print(f"# {SJ_MISSING}")
    else:
        from importlib.metadata import version

        from spikingjelly.activation_based.functional import neuron_implementation

        impl = neuron_implementation("lif", dev).get("implementation")
        print(f"# spikingjelly {version('spikingjelly')}: LIF implementation on {dev}: {impl}")
        print(SJ_MAPPING)
        if args.spike_check:
            for backend in args.backends:
                for beta in (0.5, NeuronConfig().beta):
                    print("# " + spike_check(backend, beta, 8, 16))
    for T in args.steps:
        g = torch.Generator().manual_seed(1)
        imgs = torch.rand(args.batch, 3, 32, 32, generator=g)
        if static:
            seq = imgs.unsqueeze(0).expand(T, *imgs.shape).to(dev)
        else:
            seq = torch.bernoulli(imgs.unsqueeze(0).expand(T, *imgs.shape), generator=g).to(dev)
        y = torch.randint(0, 10, (args.batch,), generator=g).to(dev)
        cases = {}
        rate = make("rate", "fast", 1, dev).train()
        cases["bound"] = partial(rate_bound_loss, rate, seq, y)
        rate_f = make("rate", "fast", T, dev).train()
        cases["rate_folded"] = partial(folded_loss, rate_f, seq, y, static)
        for backend in args.backends:
            fast = make(backend, "fast", T, dev).train()
            lib = make(backend, "library", T, dev).train()
            cases[f"{backend}:fast"] = partial(folded_loss, fast, seq, y, static)
            if args.time_checkpoint and args.checkpoint:
                ck = make(backend, "fast", T, dev).train()
                ck.time_checkpoint = min(args.checkpoint, T)
                cases[f"{backend}:fast+ckpt"] = partial(folded_loss, ck, seq, y, static)
            cases[f"{backend}:folded_lib"] = partial(folded_loss, lib, seq, y, static)
            lib_name = "snntorch" if backend == "snntorch_lif" else "norse"
            cases[f"{backend}:{lib_name}"] = partial(idiomatic_loss, lib, seq, y, lib_name)
            if sj_neuron is not None and not static:
                sj = make(backend, "fast", T, dev).train()
                nodes = spikingjelly_nodes(NeuronConfig(name=backend, time_steps=T), backend, 4)
                cases[f"{backend}:spikingjelly"] = partial(spikingjelly_loss, sj, nodes, seq, y)
                # the same with channels-last frames, as snnrsa's fast path trains on CPU: how much
                # of the lead is that layout rather than the neuron kernels
                nodes_cl = spikingjelly_nodes(NeuronConfig(name=backend, time_steps=T), backend, 4)
                seq_cl = seq.flatten(0, 1).contiguous(memory_format=torch.channels_last)
                cases[f"{backend}:spikingjelly_cl"] = partial(
                    spikingjelly_loss, sj, nodes_cl, seq_cl.unflatten(0, seq.shape[:2]), y)
        times = {k: [] for k in cases}
        for fn in cases.values():  # warm-up
            step(fn)
        for _ in range(args.reps):
            for k, fn in cases.items():
                sync()
                t0 = time.perf_counter()
                fn().backward()
                sync()
                times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        b = med["bound"]
        print(f"\nT={T}  {'case':32s} {'s/step':>8s} {'x bound':>8s}")
        for k, v in med.items():
            print(f"T={T}  {k:32s} {v:8.3f} {v / b:8.2f}")
        for backend in args.backends:
            lib_name = "snntorch" if backend == "snntorch_lif" else "norse"
            f = med[f"{backend}:fast"]
            print(f"T={T}  {backend}: fast is {med[f'{backend}:{lib_name}'] / f:.2f}x the idiomatic "
                  f"{lib_name} loop, {med[f'{backend}:folded_lib'] / f:.2f}x the folded library loop")
            ratios.append((backend, T, f / b))
            if f"{backend}:spikingjelly" in med:
                sj_ratios.append((backend, T, med[f"{backend}:spikingjelly"] / f,
                                  med[f"{backend}:spikingjelly_cl"] / f))
    if dev.type == "cpu":  # what keep_freed_memory saves: compare a run with --system-allocator
        import resource

        cpu = os.times()
        print(f"\n# process CPU time: user {cpu.user:.1f} s, system {cpu.system:.1f} s; peak RSS "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB "
              f"(keep_freed_memory={tuned})")
    if args.mem_steps and dev.type == "cpu":
        # one child process per case: peak RSS is per process; saved = bytes kept for backward
        # (checkpointed block inputs are held by the checkpoint, not counted there: see RSS)
        import subprocess

        print(f"\n{'T':>3s} {'case':32s} {'MiB saved for bwd':>18s} {'MiB peak RSS growth':>20s}"
              f" {'s/step (1 run)':>15s}")
        for T in args.mem_steps:
            b = args.backends[0]
            for case in ("bound", f"{b}:fast", f"{b}:fast+ckpt", f"{b}:library"):
                if case.endswith("+ckpt") and not args.checkpoint:
                    continue
                r = subprocess.run([sys.executable, __file__, "--batch", str(args.batch),
                                    "--checkpoint", str(min(args.checkpoint, T)),
                                    "--mem-case", f"{T}@{case}"], capture_output=True, text=True,
                                   env=dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536"))
                line = [ln for ln in r.stdout.splitlines() if ln.startswith("MEM ")]
                if not line:
                    print(f"{T:3d} {case:32s} failed: {r.stderr[-300:]}")
                    continue
                saved, rss, dt = (float(v) for v in line[0].split()[1:])
                print(f"{T:3d} {case:32s} {saved / 2**20:18.0f} {rss / 2**20:20.0f} {dt:15.2f}")
    elif args.mem_steps:
        print(f"\n{'T':>3s} {'case':32s} {'MiB CUDA peak':>14s}")
        for T in args.mem_steps:
            g = torch.Generator().manual_seed(1)
            imgs = torch.rand(args.batch, 3, 32, 32, generator=g)
            seq = torch.bernoulli(imgs.unsqueeze(0).expand(T, *imgs.shape), generator=g).to(dev)
            y = torch.randint(0, 10, (args.batch,), generator=g).to(dev)
            rate = make("rate", "fast", 1, dev).train()
            fns = {"bound": partial(rate_bound_loss, rate, seq, y)}
            b = args.backends[0]
            for impl in ("fast", "fast+ckpt", "library"):
                net = make(b, impl.replace("+ckpt", ""), T, dev).train()
                net.time_checkpoint = min(args.checkpoint, T) if impl.endswith("+ckpt") else 0
                fns[f"{b}:{impl}"] = partial(folded_loss, net, seq, y, False)
            for k, fn in fns.items():
                print(f"{T:3d} {k:32s} {peak_cuda(fn) / 2**20:14.0f}")
    print()
    for backend, T, r in ratios:
        print(f"bound_ratio {backend} T={T} {r:.3f}")
    for backend, T, r, _ in sj_ratios:
        print(f"vs_spikingjelly {backend} T={T} {r:.2f}")
    for backend, T, _, r in sj_ratios:
        print(f"vs_spikingjelly_channels_last {backend} T={T} {r:.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

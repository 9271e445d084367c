"""No-grad evaluation throughput: 720 images at 224 px through all read-out layers.

Cases (eval mode, torch.no_grad, batches of --batch):
  plain            a plain nn.Sequential CNN with the same weights, forward to the logits
  snnrsa           Network.features(x, conv1..fc1) of the rate network (what the run loop runs),
                   defaults: channels-last frames and BatchNorm folded (no-grad eval only)
  snnrsa_nofast    the same with Backbone.channels_last = Backbone.fold_bn = False
  snnrsa_cl_only / snnrsa_foldbn_only   one of the two
  spiking:<impl>   snntorch_lif, T = --time-steps, impl fast / library (on --spiking-images)
Prints images/s and the ratio to plain (target >= 0.9), and the largest feature difference of each
variant from the default path (the tolerance that variant adds).

    python tools/bench_eval.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from torch import nn

from snnrsa.config import resolve
from snnrsa.model.network import Network
from snnrsa.runtime import keep_freed_memory

CONF = Path(__file__).resolve().parents[1] / "conf"
LAYERS = ["conv1", "conv2", "conv3", "fc1"]


def plain_cnn(net: Network) -> nn.Sequential:
    bb = net.backbone
    layers: list[nn.Module] = []
    for blk in bb.blocks:
        layers += [blk.conv, blk.bn, nn.ReLU(), nn.MaxPool2d(2)]
    layers += [nn.AdaptiveAvgPool2d(bb.pool_to), nn.Flatten()]
    for fc in bb.fcs:
        layers += [fc.linear, nn.ReLU()]
    layers.append(bb.head)
    return nn.Sequential(*layers).eval()


def build(neuron: str, T: int, impl: str = "fast") -> Network:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = resolve(compose("config", overrides=[f"neuron={neuron}",
                                                   f"neuron.time_steps={T}"]))
    torch.manual_seed(0)
    net = Network(cfg, 10)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial running statistics
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    for layer in [*net.backbone.blocks, *net.backbone.fcs]:
        if hasattr(layer.neuron, "impl"):
            layer.neuron.impl = impl
    return net.eval()


SYNC = [lambda: None]


def timed(fn, images, batch) -> tuple[float, list]:
    outs = []
    SYNC[0]()
    t0 = time.perf_counter()
    with torch.no_grad():
        for s in range(0, len(images), batch):
            outs.append(fn(images[s : s + batch]))
    SYNC[0]()
    return time.perf_counter() - t0, outs


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=720)
    ap.add_argument("--spiking-images", type=int, default=64)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--time-steps", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    keep_freed_memory()  # as a snnrsa run does (snnrsa/runtime.py)
    dev = torch.device(args.device)
    if dev.type == "cpu":
        torch.set_num_threads(args.threads)
    else:
        SYNC[0] = torch.cuda.synchronize
    images = torch.rand(args.images, 3, args.size, args.size,
                        generator=torch.Generator().manual_seed(0)).to(dev)
    nets = {}
    for name, cl, fold in [("snnrsa", True, True), ("snnrsa_nofast", False, False),
                           ("snnrsa_cl_only", True, False), ("snnrsa_foldbn_only", False, True)]:
        nets[name] = build("rate", 1).to(dev)
        nets[name].backbone.channels_last, nets[name].backbone.fold_bn = cl, fold
    net = nets["snnrsa_nofast"]
    plain = plain_cnn(net)
    cases = {"plain": lambda x: plain((x - net.encoder.mean) / net.encoder.std)}
    for name, n in nets.items():
        cases[name] = (lambda m: lambda x: m.features(x, LAYERS))(n)
    times = {k: [] for k in cases}
    outs = {}
    for _ in range(args.reps):
        for k, fn in cases.items():
            t, o = timed(fn, images, args.batch)
            times[k].append(t)
            outs[k] = o
    print(f"# bench_eval: device={dev} {args.images} images at {args.size} px, batch {args.batch}, "
          f"threads {torch.get_num_threads()}, median of {args.reps}")
    med = {k: statistics.median(v) for k, v in times.items()}
    ref = {name: torch.cat([o[name] for o in outs["snnrsa_nofast"]]) for name in LAYERS}
    print(f"{'case':24s} {'s':>7s} {'img/s':>7s} {'x plain':>8s} {'max |dfeat| vs nofast':>22s}")
    for k, v in med.items():
        diff = ""
        if k.startswith("snnrsa"):
            diff = max(float((torch.cat([o[n] for o in outs[k]]) - ref[n]).abs().max().cpu())
                       for n in LAYERS)
            diff = f"{diff:.1e}"
        print(f"{k:24s} {v:7.2f} {args.images / v:7.1f} {med['plain'] / v:8.2f} {diff:>22s}")
    # spiking evaluation: T steps, fast vs library, same images
    n = args.spiking_images
    sp = {}
    for impl in ("fast", "library"):
        snet = build("snntorch_lif", args.time_steps, impl).to(dev)
        sp[impl] = min(timed(partial(snet.features, layers=LAYERS), images[:n], args.batch)[0]
                       for _ in range(max(1, args.reps - 1)))
    per_plain = med["plain"] / args.images * n
    for impl, v in sp.items():
        print(f"spiking T={args.time_steps} {impl:9s} {v:7.2f} {n / v:7.1f} img/s  "
              f"= {v / per_plain:.2f}x one plain pass ({v / per_plain / args.time_steps:.2f}x "
              f"T plain passes)")
    print(f"eval_ratio rate {med['plain'] / med['snnrsa']:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()

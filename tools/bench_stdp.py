"""STDP training throughput: the batched rule against one image at a time, same network and data.

The per-image run is the same rule fed batches of one image, i.e. the loop published conv-STDP
implementations run. Both start from the same weights, train the same layer on the same procedural
object images (32 px, the study's 32/64/128 backbone) and are timed after a warm-up batch.

    python tools/bench_stdp.py --threads 2 --layer 0
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from snnrsa.config import resolve
from snnrsa.data.procedural import make_dataset
from snnrsa.network import Network
from snnrsa.rules import make_rule
from snnrsa.rules.stdp import STDP

CONF = Path(__file__).resolve().parents[1] / "conf"
BASE = ["rule=stdp", "neuron=snntorch_lif", "encoding=latency", "neuron.time_steps=8"]


def build(overrides: list[str], seed: int) -> STDP:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = resolve(compose("config", overrides=[*BASE, *overrides]))
    torch.manual_seed(seed)
    return make_rule(cfg.rule, Network(cfg, 10), 1)


def throughput(rule: STDP, images: torch.Tensor, batch: int, layer: int) -> float:
    """Images per second of ``rule.update`` on ``layer`` (first batch excluded as warm-up)."""
    rule.update(images[:batch], layer)
    start = time.perf_counter()
    for i in range(batch, len(images) - batch + 1, batch):
        rule.update(images[i : i + batch], layer)
    n = (len(images) - batch) // batch * batch
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--layer", type=int, default=0, help="conv layer to train (0-based)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--images", type=int, default=1024, help="images for the batched run")
    p.add_argument("--ref-images", type=int, default=65, help="images for the per-image run")
    p.add_argument("--device", default="cpu")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. rule.dog=false")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x, _ = make_dataset(args.images + args.batch, 32, seed=0)
    images = torch.from_numpy(x).permute(0, 3, 1, 2).float().div(255).to(args.device)
    overrides = [*args.overrides, f"device={args.device}"]
    rates = {}
    for name, batch, n in (("batched", args.batch, args.images + args.batch),
                           ("per-image", 1, args.ref_images)):
        rule = build(overrides, seed=0)
        rule.net.to(args.device)
        rates[name] = throughput(rule, images[:n], batch, args.layer)
        print(f"{name:9s} batch {batch:3d}: {rates[name]:8.1f} images/s")
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"speed-up {rates['batched'] / rates['per-image']:.1f}x "
          f"(layer conv{args.layer + 1}, {args.threads} threads, {dev})")


if __name__ == "__main__":
    main()

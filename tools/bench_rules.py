"""Test accuracy after a fixed training budget, and cost per epoch relative to BP, for learning rules
on the same backbone (rate neurons), measured in one run so the timings share one machine state.

Every rule trains the same initial network (same seed) on the same batches for the same number of
epochs; test accuracy uses the rule's own class scores (``predict`` where a rule defines it, e.g.
the study's PC classifies after inference). CIFAR images come from the shared JPEG subset
(``train/<class>/NNNN.jpg``; the first ``--per-class`` files of each class, sorted), normalised
with the CIFAR mean and std; ``--data synthetic`` uses the embedded procedural set instead.

    python tools/bench_rules.py --per-class 300 --epochs 2 --threads 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from snnrsa.config import Config, resolve
from snnrsa.data.training import TrainingSet, batches, load_training_data
from snnrsa.rules import build_network, make_rule
from snnrsa.rules.base import Rule
from snnrsa.run.evaluation import set_mode
from snnrsa.runtime import keep_freed_memory

CONF = Path(__file__).resolve().parents[1] / "conf"
CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_subset"
CIFAR_NORM = ["data.mean=[0.4914,0.4822,0.4465]", "data.std=[0.247,0.243,0.261]"]


def config(rule: str, overrides: list[str]) -> Config:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return resolve(compose("config", overrides=[f"rule={rule}", "neuron=rate", *overrides]))


def load_split(root: Path, per_class: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """uint8 images ``[N, 3, H, W]`` and labels from ``root/<class>/*.jpg``."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((root / name).glob("*.jpg"))[:per_class]:
            images.append(np.asarray(Image.open(path).convert("RGB")))
            labels.append(label)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels), classes


def cifar(per_class: int, test_per_class: int) -> TrainingSet:
    xtr, ytr, classes = load_split(CIFAR / "train", per_class)
    xte, yte, _ = load_split(CIFAR / "test", test_per_class)
    return TrainingSet(xtr, ytr, xte, yte, classes)


@torch.no_grad()
def test_accuracy(rule: Rule, data: TrainingSet, batch_size: int, device: torch.device) -> float:
    scores = getattr(rule, "predict", rule.net)
    correct = 0
    for x, y in batches(data.test_images, data.test_labels, batch_size, device=device):
        correct += int((scores(x).argmax(1) == y).sum())
    return correct / len(data.test_labels)


def bench(cfg: Config, data: TrainingSet, epochs: int, device: torch.device) -> dict:
    """Train ``epochs`` epochs; test accuracy, last epoch's training accuracy, seconds per epoch
    (training only)."""
    torch.manual_seed(cfg.seed)
    net = build_network(cfg, len(data.classes)).to(device)
    rule = make_rule(cfg.rule, net, n_epochs=epochs)
    gen = torch.Generator().manual_seed(cfg.seed)
    seconds, train_acc = [], float("nan")
    for _ in range(epochs):
        set_mode(net, True)
        correct = seen = 0
        start = time.perf_counter()
        for x, y in batches(data.train_images, data.train_labels, cfg.data.batch_size,
                            device=device, gen=gen, drop_last=cfg.data.drop_last,
                            do_augment=cfg.data.augment):
            _, ok = rule.train_batch(x, y)
            correct, seen = correct + ok, seen + len(y)
        rule.end_epoch()
        seconds.append(time.perf_counter() - start)
        train_acc = correct / max(seen, 1)
    set_mode(net, False)
    acc = test_accuracy(rule, data, cfg.data.batch_size, device)
    return {"test_acc": acc, "train_acc": train_acc, "s_per_epoch": float(np.mean(seconds))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rules", default="bp,fa,pc,pc_published",
                   help="comma-separated; a rule may carry its own overrides: fa+rule.layers=all")
    p.add_argument("--data", choices=["cifar", "synthetic"], default="cifar")
    p.add_argument("--per-class", type=int, default=800, help="CIFAR training images per class")
    p.add_argument("--test-per-class", type=int, default=200, help="CIFAR test images per class")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every rule, e.g. seed=1")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as a snnrsa run does (snnrsa/runtime.py)
    device = torch.device(args.device)
    overrides = [*args.overrides, f"device={args.device}"]
    if args.data == "cifar":
        if not (CIFAR / "train").is_dir():
            sys.exit(f"bench_rules: no CIFAR subset at {CIFAR}; use --data synthetic")
        data = cifar(args.per_class, args.test_per_class)
        overrides = [*CIFAR_NORM, *overrides]
    else:
        data = load_training_data(config("bp", overrides).data)
    print(f"{args.data}: {len(data.train_labels)} training / {len(data.test_labels)} test images, "
          f"{args.epochs} epochs, {torch.get_num_threads()} threads, device {device}", flush=True)
    configs = {}
    for spec in args.rules.split(","):  # a rule, optionally with its own overrides after '+'
        name, *extra = spec.split("+")
        configs[spec] = config(name, [*overrides, *extra])
    results = {}
    for name, cfg in configs.items():
        results[name] = bench(cfg, data, args.epochs, device)
        print(f"  {name}: {results[name]}", flush=True)
    base = results.get("bp", {}).get("s_per_epoch", float("nan"))
    width = max(14, *(len(name) + 2 for name in results))
    print(f"\n{'rule':<{width}}{'test acc':>10}{'train acc':>11}{'s/epoch':>10}{'cost vs bp':>12}")
    for name, r in results.items():
        print(f"{name:<{width}}{r['test_acc']:>10.3f}{r['train_acc']:>11.3f}{r['s_per_epoch']:>10.1f}"
              f"{r['s_per_epoch'] / base:>11.2f}x")


if __name__ == "__main__":
    main()

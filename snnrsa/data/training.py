"""Training sets held in memory as uint8 tensors, and a seeded batch iterator with augmentation."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from snnrsa.data.images import load_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")


@dataclass
class TrainingSet:
    train_images: torch.Tensor  # uint8 [N, C, H, W]
    train_labels: torch.Tensor  # int64 [N]
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: list[str]


def _subset(n_total: int, n: int | None, seed: int, what: str) -> np.ndarray:
    """Indices of a class-mixed random subset (all, in order, when ``n`` is None)."""
    if n is None:
        return np.arange(n_total)
    if not 0 < n <= n_total:
        raise ValueError(f"{what}={n} must lie in 1..{n_total} (images available)")
    return np.sort(np.random.default_rng(seed).choice(n_total, size=n, replace=False))


def scan_image_folder(root: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """Image paths, labels and class names of a ``<class>/<image>`` tree (classes sorted)."""
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"{root}: expected one sub-folder per class, found none")
    paths, labels = [], []
    for label, cls in enumerate(classes):
        files = sorted(p for p in (root / cls).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise ValueError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders")
    return paths, np.array(labels, dtype=np.int64), classes


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


def _load_folder(root: Path, n: int | None, seed: int, size: int, what: str):
    paths, labels, classes = scan_image_folder(root)
    idx = _subset(len(paths), n, seed, what)
    arr = np.stack([np.round(load_image(paths[i], size) * 255).astype(np.uint8) for i in idx])
    return _to_tensor(arr), torch.from_numpy(labels[idx]), classes


def load_training_data(cfg: Any, run_seed: int = 0) -> TrainingSet:
    """The configured training set. ``data=synthetic`` is the embedded procedural object set;
    ``imagefolder`` reads any class-folder tree, ``cifar10`` uses torchvision. Subsets are drawn
    from ``data_seed`` (``subset=fixed``) or from the run seed (``subset=per_seed``)."""
    if cfg.name in ("imagefolder", "cifar10"):
        seed = cfg.data_seed if cfg.subset == "fixed" else run_seed
        if cfg.name == "imagefolder":
            xtr, ytr, classes = _load_folder(
                Path(cfg.train_dir).expanduser(), cfg.n_train, seed, cfg.image_size, "data.n_train"
            )
            xte, yte, test_classes = _load_folder(
                Path(cfg.test_dir).expanduser(), cfg.n_test, seed + 1, cfg.image_size, "data.n_test"
            )
            if test_classes != classes:
                raise ValueError(
                    f"data.test_dir classes {test_classes} differ from "
                    f"data.train_dir classes {classes}"
                )
            return TrainingSet(xtr, ytr, xte, yte, classes)
        from torchvision.datasets import CIFAR10

        root = Path(cfg.root).expanduser()
        splits = []
        for train, n, what in (
            (True, cfg.n_train, "data.n_train"),
            (False, cfg.n_test, "data.n_test"),
        ):
            ds = CIFAR10(str(root), train=train, download=cfg.download)
            idx = _subset(len(ds.targets), n, seed + (0 if train else 1), what)
            splits += [_to_tensor(ds.data[idx]), torch.tensor(ds.targets)[idx]]
        return TrainingSet(*splits, list(ds.classes))
    if cfg.name == "synthetic":
        from snnrsa.data.procedural import CLASSES, make_dataset

        xtr, ytr = make_dataset(cfg.n_train, cfg.image_size, seed=cfg.data_seed)
        xte, yte = make_dataset(cfg.n_test, cfg.image_size, seed=cfg.data_seed + 100_003)
        return TrainingSet(
            torch.from_numpy(xtr).permute(0, 3, 1, 2).contiguous(),
            torch.from_numpy(ytr).long(),
            torch.from_numpy(xte).permute(0, 3, 1, 2).contiguous(),
            torch.from_numpy(yte).long(),
            list(CLASSES),
        )
    raise ValueError(f"data.name={cfg.name!r} is not a known training set")


def augment(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random horizontal flip and random crop with zero padding, per image, from ``gen``."""
    b, _, h, w = x.shape
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip.view(b, 1, 1, 1), x.flip(3), x)
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    rows = (dy.view(b, 1) + torch.arange(h)).view(b, 1, h, 1)
    cols = (dx.view(b, 1) + torch.arange(w)).view(b, 1, 1, w)
    bidx = torch.arange(b).view(b, 1, 1, 1)
    cidx = torch.arange(x.shape[1]).view(1, -1, 1, 1)
    return padded[bidx, cidx, rows, cols]


def batches(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    *,
    device: torch.device,
    gen: torch.Generator | None = None,
    drop_last: bool = False,
    do_augment: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Float [0, 1] batches on ``device``; shuffled when a generator is given."""
    n = len(labels)
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        x = images[idx].float().div_(255.0)
        if do_augment and gen is not None:
            x = augment(x, gen)
        yield x.to(device, non_blocking=True), labels[idx].to(device, non_blocking=True)

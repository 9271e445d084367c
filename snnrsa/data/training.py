"""Training sets held in memory as uint8 tensors, and a seeded batch iterator with augmentation."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass
class TrainingSet:
    train_images: torch.Tensor  # uint8 [N, C, H, W]
    train_labels: torch.Tensor  # int64 [N]
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: list[str]


def load_training_data(cfg: Any) -> TrainingSet:
    """The configured training set; ``data=synthetic`` is the embedded procedural object set."""
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

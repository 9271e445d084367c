"""Evaluation images: load, resize the shorter edge, centre-crop, as float tensors in [0, 1]."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError


def load_image(path: Path, resolution: int) -> np.ndarray:
    """One RGB image, shorter edge resized to ``resolution`` (bilinear, antialiased as PIL and
    torchvision's Resize do), centre-cropped to a square; float32 (H, W, 3) in [0, 1]."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            scale = resolution / min(w, h)
            new_w, new_h = max(resolution, round(w * scale)), max(resolution, round(h * scale))
            img = img.resize((new_w, new_h), Image.BILINEAR)
            top = int(round((new_h - resolution) / 2.0))
            left = int(round((new_w - resolution) / 2.0))
            img = img.crop((left, top, left + resolution, top + resolution))
            return np.asarray(img, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from None


def load_images(paths: Sequence[Path], resolution: int) -> torch.Tensor:
    """Stack of images ``[N, 3, R, R]``; fails before any work if some files are missing."""
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(paths)} stimulus images are missing, e.g. {missing[:3]}"
        )
    arr = np.stack([load_image(Path(p), resolution) for p in paths])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()

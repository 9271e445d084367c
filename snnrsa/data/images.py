"""Evaluation images: load, resize the shorter edge, centre-crop, as float tensors in [0, 1]."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

INTERPOLATION = {
    "bilinear": Image.BILINEAR,  # torchvision's Resize default (antialiased on PIL images)
    "bicubic": Image.BICUBIC,  # PIL's own resize default
    "lanczos": Image.LANCZOS,
    "nearest": Image.NEAREST,
    "box": Image.BOX,
}


def load_image(path: Path, resolution: int, interpolation: str = "bilinear") -> np.ndarray:
    """One RGB image, shorter edge resized to ``resolution`` (PIL, antialiased as torchvision's
    Resize on PIL images), centre-cropped to a square; float32 (H, W, 3) in [0, 1]."""
    if interpolation not in INTERPOLATION:
        raise ValueError(f"interpolation={interpolation!r} is not one of {sorted(INTERPOLATION)}")
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            scale = resolution / min(w, h)
            new_w, new_h = max(resolution, round(w * scale)), max(resolution, round(h * scale))
            img = img.resize((new_w, new_h), INTERPOLATION[interpolation])
            top = int(round((new_h - resolution) / 2.0))
            left = int(round((new_w - resolution) / 2.0))
            img = img.crop((left, top, left + resolution, top + resolution))
            return np.asarray(img, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from None


def load_images(
    paths: Sequence[Path], resolution: int, interpolation: str = "bilinear"
) -> torch.Tensor:
    """Stack of images ``[N, 3, R, R]``; fails before any work if some files are missing."""
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(paths)} stimulus images are missing, e.g. {missing[:3]}"
        )
    arr = np.stack([load_image(Path(p), resolution, interpolation) for p in paths])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()

"""Procedural, labelled object images: a training and evaluation set that ships with the code.

Each image shows one shape (its class) with its own colour and surface texture (plain, stripes,
dots or checker at a random frequency and orientation), at a random position, scale and rotation,
over coloured 1/f noise with a few distractor blobs and, in 15 % of the images, a second shape of
a random class cut by the image border. The class is the shape alone; colour, texture, pose and
clutter are nuisance variables, so a small CNN learns the task well above chance but not perfectly.

Rendering is a pure function of the `ObjectParams` (the clutter comes from each image's
``clutter_seed``), vectorised over images: shapes are signed-distance functions evaluated on the
pixel grid, and edges are anti-aliased analytically from the distance, so no supersampling is needed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.fft

CLASSES: list[str] = [
    "circle",
    "ellipse",
    "ring",
    "crescent",
    "square",
    "triangle",
    "hexagon",
    "star",
    "cross",
    "arrow",
]
CATEGORIES: dict[str, str] = {
    "circle": "round",
    "ellipse": "round",
    "ring": "round",
    "crescent": "round",
    "square": "angular",
    "triangle": "angular",
    "hexagon": "angular",
    "star": "symbol",
    "cross": "symbol",
    "arrow": "symbol",
}
CATEGORY_NAMES: list[str] = ["round", "angular", "symbol"]
TEXTURES: list[str] = ["plain", "stripes", "dots", "checker"]
# Fields that make up an object's identity (a THINGS-like "concept"); the others are its pose.
APPEARANCE_FIELDS: tuple[str, ...] = (
    "color",
    "texture",
    "texture_color",
    "texture_freq",
    "texture_orient",
)

# Rows: luminance, red-green and blue-yellow noise maps -> RGB.
_OPPONENT = np.array([[1, 1, 1], [0.5, -0.5, 0], [-0.25, -0.25, 0.5]], dtype=np.float32)
_CHUNK = 256  # images rendered at once: bounds memory at large image sizes


@dataclass(frozen=True)
class ObjectParams:
    """Everything needed to render one image (coordinates: image centre 0, edges at +-1)."""

    label: int  # index into CLASSES
    x: float  # object centre, rightwards
    y: float  # object centre, downwards
    scale: float  # shape radius as a fraction of the image half-width
    rotation: float  # radians
    color: tuple[float, float, float]  # RGB in [0, 1]
    texture: str  # one of TEXTURES
    texture_color: tuple[float, float, float]
    texture_freq: float  # cycles per shape radius
    texture_orient: float  # radians, in the object's frame
    clutter_seed: int  # background noise and distractors

    @property
    def class_name(self) -> str:
        return CLASSES[self.label]

    @property
    def category(self) -> str:
        return CATEGORIES[CLASSES[self.label]]


# ---------------------------------------------------------------- shapes (radius about 1)
def _box(x: np.ndarray, y: np.ndarray, cx: float, cy: float, hx: float, hy: float) -> np.ndarray:
    return np.maximum(np.abs(x - cx) - hx, np.abs(y - cy) - hy)


def _convex(x: np.ndarray, y: np.ndarray, vertices: list[tuple[float, float]]) -> np.ndarray:
    """Distance to a counter-clockwise convex polygon (exact inside, a lower bound outside)."""
    d = np.full(x.shape, -np.inf)
    for (ax, ay), (bx, by) in zip(vertices, vertices[1:] + vertices[:1]):
        ex, ey = bx - ax, by - ay
        norm = np.hypot(ex, ey)
        d = np.maximum(d, ((x - ax) * ey - (y - ay) * ex) / norm)
    return d


def _regular(n: int, radius: float) -> list[tuple[float, float]]:
    a = 2 * np.pi * np.arange(n) / n + np.pi / 2
    return [(radius * np.cos(t), radius * np.sin(t)) for t in a]


def _star(x: np.ndarray, y: np.ndarray, points: int = 5, outer: float = 1.0, inner: float = 0.42):
    """Straight-edged star from its polar boundary; the radial gap is scaled to a distance."""
    half = np.pi / points
    psi = np.abs(np.mod(np.arctan2(y, x) + half, 2 * half) - half)
    bx, by = inner * np.cos(half) - outer, inner * np.sin(half)
    boundary = outer * by / (np.cos(psi) * by - np.sin(psi) * bx)
    return (np.hypot(x, y) - boundary) * 0.6


_TRIANGLE = _regular(3, 1.0)
_HEXAGON = _regular(6, 0.9)
_ARROW_HEAD = [(0.95, 0.0), (0.15, 0.55), (0.15, -0.55)]

SHAPES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "circle": lambda x, y: np.hypot(x, y) - 0.8,
    "ellipse": lambda x, y: (np.hypot(x / 0.95, y / 0.5) - 1.0) * 0.5,
    "ring": lambda x, y: np.maximum(np.hypot(x, y) - 0.9, 0.5 - np.hypot(x, y)),
    "crescent": lambda x, y: np.maximum(np.hypot(x, y) - 0.9, 0.72 - np.hypot(x - 0.42, y)),
    "square": lambda x, y: _box(x, y, 0.0, 0.0, 0.72, 0.72),
    "triangle": lambda x, y: _convex(x, y, _TRIANGLE),
    "hexagon": lambda x, y: _convex(x, y, _HEXAGON),
    "star": _star,
    "cross": lambda x, y: np.minimum(
        _box(x, y, 0.0, 0.0, 0.9, 0.28), _box(x, y, 0.0, 0.0, 0.28, 0.9)
    ),
    "arrow": lambda x, y: np.minimum(
        _box(x, y, -0.35, 0.0, 0.55, 0.17), _convex(x, y, _ARROW_HEAD)
    ),
}


# ---------------------------------------------------------------- sampling
def _hsv_colors(u: np.ndarray) -> np.ndarray:
    """Colours (..., 3) from uniforms (..., 3): any hue, saturation and value 0.35-1 (HSV to RGB)."""
    h, s, v = u[..., 0:1], 0.35 + 0.65 * u[..., 1:2], 0.35 + 0.65 * u[..., 2:3]
    k = np.mod(np.array([5.0, 3.0, 1.0], dtype=u.dtype) + h * 6, 6)
    return v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)


def sample_params(
    labels: Sequence[int] | np.ndarray, rng: np.random.Generator
) -> list[ObjectParams]:
    """Random pose, appearance and clutter seed for each label, drawn from rng in one block."""
    n = len(labels)
    u = rng.random((n, 13))
    seeds = rng.integers(2**62, size=n)
    color = _hsv_colors(u[:, 4:7])
    # Texture colour part-way from the base colour to a random one: texture is a visible nuisance
    # but must not hide the outline (at full contrast the task becomes too hard for a small CNN).
    texture_color = color + 0.4 * (_hsv_colors(u[:, 7:10]) - color)
    texture = np.minimum((u[:, 10] * len(TEXTURES)).astype(int), len(TEXTURES) - 1)
    return [
        ObjectParams(
            label=int(labels[i]),
            x=float(-0.25 + 0.5 * u[i, 0]),
            y=float(-0.25 + 0.5 * u[i, 1]),
            scale=float(0.5 + 0.3 * u[i, 2]),
            rotation=float(2 * np.pi * u[i, 3]),
            color=(float(color[i, 0]), float(color[i, 1]), float(color[i, 2])),
            texture=TEXTURES[texture[i]],
            texture_color=(
                float(texture_color[i, 0]),
                float(texture_color[i, 1]),
                float(texture_color[i, 2]),
            ),
            texture_freq=float(1.0 + 2.0 * u[i, 11]),
            texture_orient=float(np.pi * u[i, 12]),
            clutter_seed=int(seeds[i]),
        )
        for i in range(n)
    ]


def make_dataset(n: int, image_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (n, H, W, 3) and int64 labels (n,), balanced classes, shuffled."""
    if n < 1 or image_size < 8:
        raise ValueError(f"need n >= 1 and image_size >= 8, got n={n}, image_size={image_size}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(CLASSES)).astype(np.int64)
    return render(sample_params(labels, rng), image_size), labels


# ---------------------------------------------------------------- rendering
def render(params: Sequence[ObjectParams], image_size: int) -> np.ndarray:
    """uint8 images (n, S, S, 3) for the given parameters; deterministic."""
    out = np.empty((len(params), image_size, image_size, 3), dtype=np.uint8)
    for start in range(0, len(params), _CHUNK):
        chunk = params[start : start + _CHUNK]
        img = _render_chunk(chunk, image_size)
        out[start : start + len(chunk)] = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
    return out


def _grid(size: int) -> np.ndarray:
    return ((np.arange(size) + 0.5) / size * 2 - 1).astype(np.float32)


def _one_over_f(white: np.ndarray) -> np.ndarray:
    """Filter white noise (..., S, S) to a 1/f amplitude spectrum, then standardise each map."""
    size = white.shape[-1]
    f = np.hypot(np.fft.fftfreq(size)[:, None], np.fft.rfftfreq(size)[None, :])
    gain = (1.0 / np.maximum(f, 1.0 / size)).astype(np.float32)
    gain[0, 0] = 0
    noise = scipy.fft.irfft2(scipy.fft.rfft2(white) * gain, s=white.shape[-2:])
    noise /= noise.std(axis=(-2, -1), keepdims=True)
    return noise


def _composite(canvas: np.ndarray, alpha: np.ndarray, color: np.ndarray) -> None:
    """canvas (B,S,S,3) <- color (B,3) or (B,S,S,3) laid over it with coverage alpha (B,S,S)."""
    if color.ndim == 2:
        color = color[:, None, None, :]
    delta = color - canvas
    delta *= alpha[..., None]
    canvas += delta


def _shape_alpha(
    labels: np.ndarray, x: np.ndarray, y: np.ndarray, scale: np.ndarray, rot: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coverage (B,S,S) of each image's shape, plus the object-frame coordinates of every pixel."""
    g = _grid(size)
    x, y, scale, rot = (np.asarray(a, dtype=np.float32) for a in (x, y, scale, rot))
    dx = g[None, None, :] - x[:, None, None]
    dy = g[None, :, None] - y[:, None, None]
    c, s = np.cos(rot)[:, None, None], np.sin(rot)[:, None, None]
    u = (c * dx + s * dy) / scale[:, None, None]
    v = (-s * dx + c * dy) / scale[:, None, None]
    dist = np.empty(u.shape, dtype=np.float32)
    for k, name in enumerate(CLASSES):
        m = labels == k
        if m.any():
            dist[m] = SHAPES[name](u[m], v[m])
    pixels_per_unit = (scale * size / 2)[:, None, None]
    alpha = np.clip(0.5 - dist * pixels_per_unit, 0, 1)
    return alpha.astype(np.float32), u, v


def _texture(
    kind: str, u: np.ndarray, v: np.ndarray, freq: np.ndarray, orient: np.ndarray
) -> np.ndarray:
    """Texture mix weight in [0, 1] (0 = base colour) in the object's frame."""
    c, s = np.cos(orient)[:, None, None], np.sin(orient)[:, None, None]
    f = freq[:, None, None]
    a, b = (c * u + s * v) * f, (-s * u + c * v) * f
    if kind == "stripes":
        return np.clip(0.5 + 2 * np.sin(2 * np.pi * a), 0, 1)
    if kind == "checker":
        return np.clip(0.5 + 3 * np.sin(2 * np.pi * a) * np.sin(2 * np.pi * b), 0, 1)
    if kind == "dots":
        d = np.hypot(a - np.round(a), b - np.round(b))
        return np.clip(0.5 + (0.28 - d) * 8, 0, 1)
    return np.zeros_like(u)


def _render_chunk(params: Sequence[ObjectParams], size: int) -> np.ndarray:
    canvas = _clutter(params, size)
    _draw_objects(canvas, params, size)
    return canvas


def _clutter(params: Sequence[ObjectParams], size: int) -> np.ndarray:
    """Each image's background ``[n, size, size, 3]``: 1/f colour noise, three blobs and, in some
    images, a second shape cut by the border, all drawn from the image's own clutter seed."""
    n = len(params)
    g = _grid(size)
    # Clutter: each image's own generator, so an image does not depend on its neighbours.
    white = np.empty((n, 3, size, size), dtype=np.float32)
    c = np.empty((n, 36))
    for i, p in enumerate(params):
        r = np.random.default_rng(p.clutter_seed)
        white[i] = r.standard_normal((3, size, size), dtype=np.float32)
        c[i] = r.random(36)
    c = c.astype(np.float32)
    base = 0.2 + 0.6 * c[:, 0:3]
    lum, chroma = 0.02 + 0.035 * c[:, 3], 0.01 + 0.02 * c[:, 4]
    contrast = np.stack([lum, chroma, chroma], axis=1)
    blobs = c[:, 5:26].reshape(n, 3, 7)  # x, y, radius, edge sharpness, colour (3)
    blob_xy = blobs[..., :2] * 2 - 1
    blob_radius = 0.025 + 0.065 * blobs[..., 2]
    blob_sharp = 1 + 3 * blobs[..., 3]
    blob_color = _hsv_colors(blobs[..., 4:])
    # A second shape cut by the border in 15 % of the images: side, position along it, depth.
    present = c[:, 26] < 0.15
    partial_label = np.minimum((c[:, 27] * len(CLASSES)).astype(int), len(CLASSES) - 1)
    side = np.minimum((c[:, 28] * 4).astype(int), 3)
    along, edge = c[:, 29] * 2 - 1, (0.9 + 0.25 * c[:, 30]) * np.where(side % 2, 1, -1)
    partial_x, partial_y = np.where(side < 2, edge, along), np.where(side < 2, along, edge)
    partial_scale, partial_rot = 0.25 + 0.2 * c[:, 31], 2 * np.pi * c[:, 32]
    partial_color = _hsv_colors(c[:, 33:36])

    # Background: luminance plus red-green and blue-yellow opponent 1/f noise on a base colour.
    maps = np.moveaxis(_one_over_f(white), 1, -1) * contrast[:, None, None, :]
    canvas = base[:, None, None, :] + maps @ _OPPONENT

    for k in range(3):
        d = np.hypot(
            g[None, None, :] - blob_xy[:, k, 0, None, None],
            g[None, :, None] - blob_xy[:, k, 1, None, None],
        )
        edge_px = (blob_radius[:, k, None, None] - d) * size / 2  # positive inside
        alpha = np.clip(edge_px * blob_sharp[:, k, None, None] / 2 + 0.5, 0, 1)
        _composite(canvas, alpha, blob_color[:, k])

    if present.any():
        m = present
        alpha, _, _ = _shape_alpha(
            partial_label[m], partial_x[m], partial_y[m], partial_scale[m], partial_rot[m], size
        )
        sub = canvas[m]
        _composite(sub, alpha, partial_color[m])
        canvas[m] = sub
    return canvas


def _draw_objects(canvas: np.ndarray, params: Sequence[ObjectParams], size: int) -> None:
    """In place: each image's object, textured, over its background."""
    labels = np.array([p.label for p in params])
    fields = {
        f: np.array([getattr(p, f) for p in params], dtype=np.float32)
        for f in ("x", "y", "scale", "rotation", "texture_freq", "texture_orient")
    }
    alpha, u, v = _shape_alpha(
        labels, fields["x"], fields["y"], fields["scale"], fields["rotation"], size
    )
    mix = np.zeros(u.shape, dtype=np.float32)
    textures = np.array([p.texture for p in params])
    # Fade texture contrast as it nears the pixel grid's Nyquist limit instead of aliasing.
    cycles_per_pixel = fields["texture_freq"] / (fields["scale"] * size / 2)
    fade = np.clip(1 - 2.5 * cycles_per_pixel, 0, 1)[:, None, None]
    for kind in TEXTURES[1:]:
        t = textures == kind
        if t.any():
            mix[t] = _texture(
                kind, u[t], v[t], fields["texture_freq"][t], fields["texture_orient"][t]
            )
    mix = 0.5 + (mix - 0.5) * fade
    mix[textures == "plain"] = 0
    color = np.array([p.color for p in params], dtype=np.float32)[:, None, None, :]
    tex_color = np.array([p.texture_color for p in params], dtype=np.float32)[:, None, None, :]
    _composite(canvas, alpha, color * (1 - mix[..., None]) + tex_color * mix[..., None])

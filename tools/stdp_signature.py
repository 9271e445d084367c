"""What canonical STDP (``rule=stdp``, the shipped defaults) learns on natural images: the CIFAR-10
subset in ``../shared/data/cifar10_subset`` (``data=imagefolder``).

Per seed: conv1, conv2, conv3 trained greedily for ``--images`` training images each (image by
image order of a fixed shuffle, no augmentation, batches of 128); then conv1's orientation index
(``orientation_tuning``; random kernels of the same shape for reference) and the physiologists'
grating OSI (``grating_osi``), C = mean(w(1-w)), the
share of features that never won and the largest share of wins, firing on the test images; and
linear-probe accuracy on conv2 / conv3 of the trained network against the same network before
training (the untrained baseline: the recipe's initial weights N(0.8, 0.05)). Receptive-field grids
(on minus off) as PNG. Prints a markdown table, mean and standard error over seeds.

    nice -n 10 python tools/stdp_signature.py --seeds 0 1 2 --images 20000 --out docs/stdp_signature
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from snnrsa.config import resolve  # noqa: E402
from snnrsa.data.training import load_training_data  # noqa: E402
from snnrsa.model.linear_probe import linear_probes  # noqa: E402
from snnrsa.rules import build_network, make_rule  # noqa: E402
from snnrsa.rules.stdp.analysis import effective_rf, grating_osi, orientation_tuning  # noqa: E402
from snnrsa.rules.stdp.functional import convergence  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf"


def rf_png(weight: torch.Tensor, path: Path, title: str) -> None:
    rf = effective_rf(weight).numpy()
    n = len(rf)
    cols = 8
    fig, axes = plt.subplots(-(-n // cols), cols, figsize=(cols * 0.8, -(-n // cols) * 0.8))
    for ax, k in zip(axes.flat, rf):
        lim = max(abs(k).max(), 1e-9)
        ax.imshow(k, cmap="RdBu_r", vmin=-lim, vmax=lim)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=8)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


def ideal_kernels(shape: torch.Size) -> torch.Tensor:
    """The index's scale for this kernel size: a step edge (on left, off right, full height) and
    a one-pixel bar (on), ``[2, C_in, k, k]``. A finite window spreads any pattern's power, so
    even these score below 1 (5 x 5: edge 0.60, bar 0.81)."""
    _, c_in, k, _ = shape
    edge, bar = torch.zeros(c_in, k, k), torch.zeros(c_in, k, k)
    edge[0, :, : (k + 1) // 2] = 1
    if c_in > 1:
        edge[1, :, (k + 1) // 2 :] = 1
    bar[0, :, k // 2] = 1
    return torch.stack([edge, bar])


@torch.no_grad()
def firing(rule, images: torch.Tensor, size: int) -> dict[str, float]:
    """Per conv layer at evaluation (no inhibition): share of units that spike and share of
    features silent on every image, for ``images`` resized to ``size`` px (bilinear)."""
    x = (
        F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        if size != images.shape[-1]
        else images
    )
    out = {}
    for i, io in enumerate(rule.all_io(x)):
        rate, silent = io.fired_share()
        out[f"rate{i + 1}_{size}px"], out[f"silent{i + 1}_{size}px"] = rate, silent
    return out


def run_seed(seed: int, n_images: int, n_probe: int, overrides: list[str], out: Path | None) -> dict:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = resolve(
            compose(
                "config",
                overrides=[
                    "rule=stdp",
                    "data=imagefolder",
                    f"data.n_train={n_probe}",
                    "data.n_test=1000",
                    f"rule.layer_images=[{n_images}]",
                    f"seed={seed}",
                    *overrides,
                ],
            )
        )
    data = load_training_data(cfg.data, run_seed=seed)
    torch.manual_seed(seed)
    rule = make_rule(cfg.rule, build_network(cfg, len(data.classes)), 1)
    probe_args = (
        data.train_images,
        data.train_labels,
        data.test_images,
        data.test_labels,
        ["conv2", "conv3"],
    )
    before = {r.layer: r.test_acc for r in linear_probes(rule.net, *probe_args)}
    gen = torch.Generator().manual_seed(seed)
    images = data.train_images
    t0 = time.perf_counter()
    while not rule.done:
        order = torch.randperm(len(images), generator=gen)
        for i in range(0, len(order) - 127, 128):
            x = images[order[i : i + 128]]
            rule.train_batch(x.float() / 255 if x.dtype == torch.uint8 else x, None)
            if rule.done:
                break
    seconds = time.perf_counter() - t0
    w = rule.weights[0]
    index = orientation_tuning(w)[0]
    random_w = torch.rand(w.shape, generator=torch.Generator().manual_seed(seed))
    rand = orientation_tuning(random_w)[0]
    ideal = orientation_tuning(ideal_kernels(w.shape))[0]
    after = {r.layer: r.test_acc for r in linear_probes(rule.net, *probe_args)}
    use = rule.usage(0)
    test = data.test_images[:64]
    test = test.float() / 255 if test.dtype == torch.uint8 else test
    fire = {**firing(rule, test, 32), **firing(rule, test, 224)}
    if out is not None:
        rf_png(
            w,
            out / f"conv1_rf_seed{seed}.png",
            f"conv1 after {n_images} CIFAR images, seed {seed}: orientation index {index.mean():.2f}",
        )
    return {
        "seed": seed,
        "osi": index.mean(),
        "osi_random": rand.mean(),
        "osi_ideal_edge": ideal[0],
        "osi_ideal_bar": ideal[1],
        "grating_osi": grating_osi(w).mean(),
        "grating_osi_random": grating_osi(random_w).mean(),
        "C": convergence(w),
        "never_won": use["never_won"],
        "max_share": use["max_share"],
        "n_features": w.shape[0],
        "C_all": [convergence(x) for x in rule.weights],
        "seconds": seconds,
        **fire,
        **{f"probe_{k}_untrained": v for k, v in before.items()},
        **{f"probe_{k}_trained": v for k, v in after.items()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--images", type=int, default=20000, help="training images per layer")
    p.add_argument("--probe-images", type=int, default=5000, help="training images (also the probe's)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="folder for the RF grids")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.out is not None:
        a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in a.seeds:
        rows.append(run_seed(seed, a.images, a.probe_images, a.overrides, a.out))
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)
    keys = [
        "osi",
        "osi_random",
        "osi_ideal_edge",
        "osi_ideal_bar",
        "grating_osi",
        "grating_osi_random",
        "C",
        "never_won",
        "max_share",
        "probe_conv2_untrained",
        "probe_conv2_trained",
        "probe_conv3_untrained",
        "probe_conv3_trained",
    ]
    print("\n| quantity | mean | SE |\n|---|---|---|")
    for k in keys:
        v = np.array([r[k] for r in rows], dtype=float)
        se = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
        print(f"| {k} | {v.mean():.4f} | {se:.4f} |")


if __name__ == "__main__":
    main()

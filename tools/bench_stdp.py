"""STDP training throughput: the batched rule against a per-image reference, same network and data.

The reference (``reference_update``) is a plain loop implementation, the way published conv-STDP
code runs (one image at a time; per image an IF membrane stepped over time, first spikes, pointwise
inhibition, pooling of spike trains between layers, k winners found one after another, one kernel
update per winner). Like the batched rule it sums a batch's updates computed at the same weights,
so both give the same Δw (checked and printed). Both start from the same weights, train the same
layer on the same procedural object images (32 px, the shipped ``rule=stdp``: the recipe's
network, 5x5 / 2x2 kernels, rank-order code over T = 15) and are timed after a warm-up batch,
in alternating rounds (one batched batch, then a share
of the per-image images) so that a changing machine load hits both alike.

    python tools/bench_stdp.py --threads 2 --layer 0 1 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from snnrsa.config import resolve
from snnrsa.data.procedural import make_dataset
from snnrsa.rules import build_network, make_rule
from snnrsa.rules.stdp import STDP
from snnrsa.rules.stdp.functional import learning_rates, per_layer
from snnrsa.runtime import keep_freed_memory

CONF = Path(__file__).resolve().parents[1] / "conf"
BASE = ["rule=stdp"]  # the shipped defaults: the recipe (rank-order code, T = 15, its network)


def build(overrides: list[str], seed: int) -> STDP:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = resolve(compose("config", overrides=[*BASE, *overrides]))
    torch.manual_seed(seed)
    return make_rule(cfg.rule, build_network(cfg, 10), 1)


@torch.no_grad()
def reference_update(rule: STDP, images: torch.Tensor, layer: int) -> torch.Tensor:
    """Δw of ``layer`` for a batch, one image at a time with explicit loops (one-spike IF/LIF
    neurons stepped over time, per-feature gains where the rule has homeostatic offsets, pointwise
    inhibition where the rule applies it while ``layer`` learns, pooling of spike trains, k winners
    one after another); each image's events are applied as logit(w) += ±a at the batch's weights,
    the rule's batch-size-invariant step."""
    cfg, blocks, steps = rule.cfg, rule.net.backbone.blocks, rule.time_steps
    w = blocks[layer].conv.weight
    drive = torch.zeros_like(w)
    k, radius = per_layer(cfg.k_winners, layer), per_layer(cfg.inhibition_radius, layer)
    ks, pad = w.shape[-1], blocks[layer].conv.padding[0]
    for n, img in enumerate(images):
        x = rule.net.encoder(img.unsqueeze(0))[:, 0]  # [T, C, H, W] input spikes
        for i, block in enumerate(blocks[: layer + 1]):
            th = float(block.neuron.threshold)
            gain = block.neuron.gain()  # homeostatic offsets scale each feature's drive
            acc = torch.zeros_like(x[0])
            t_post = v_post = None
            for t in range(steps):  # IF/LIF membrane, no reset, first crossing only
                acc = cfg.beta * acc + x[t]  # (leaky) sum of input spikes so far
                v = F.conv2d(acc.unsqueeze(0), block.conv.weight, padding=block.conv.padding[0])[0]
                v = v if gain is None else v * gain.view(-1, 1, 1)
                if t_post is None:
                    t_post = torch.full_like(v, float(steps))
                    v_post = torch.zeros_like(v)
                new = (v >= th) & (t_post == steps)
                t_post[new], v_post[new] = float(t), v[new]
            if rule.pointwise_at(i, layer):  # per position: earliest, then larger potential
                order = torch.where(t_post < steps, t_post.double() * 1e6 - v_post, torch.inf)
                keep = torch.zeros_like(t_post, dtype=torch.bool)
                keep.scatter_(0, order.argmin(0, keepdim=True), True)
                t_post[~keep & (t_post < steps)] = float(steps)
            spikes = torch.stack([(t_post == t).float() for t in range(steps)])
            if i < layer:
                fired = F.max_pool2d(spikes.cumsum(0).clamp(max=1), 2, padding=block.pool.padding)
                if i == layer - 1 and cfg.pointwise_inhibition == "learning":
                    t_pool = steps - fired.sum(0)  # per position the earliest feature (lowest index)
                    first = torch.where(t_pool < steps, t_pool, torch.inf).argmin(0, keepdim=True)
                    fired = fired * (torch.arange(len(t_pool)).view(-1, 1, 1) == first)
                x = torch.diff(fired, dim=0, prepend=torch.zeros_like(fired[:1]))
                continue
            t_pre = torch.full(x.shape[1:], float(steps))
            for t in reversed(range(steps)):
                t_pre[x[t] > 0] = float(t)
            t_pre = F.pad(t_pre, (pad,) * 4, value=float(steps))
            avail = t_post < steps
            a_plus, a_minus = learning_rates(cfg, rule.seen[layer] + n, layer)
            for _ in range(k):  # k-WTA, one winner after another
                score = torch.where(avail, t_post.double() * 1e6 - v_post, torch.inf)
                flat = int(score.argmin())
                if not torch.isfinite(score.flatten()[flat]):
                    break
                f, y, xx = (
                    flat // (score.shape[1] * score.shape[2]),
                    (flat // score.shape[2]) % score.shape[1],
                    flat % score.shape[2],
                )
                ltp = t_pre[:, y : y + ks, xx : xx + ks] <= t_post[f, y, xx]
                drive[f] += torch.where(ltp, a_plus, -a_minus)
                avail[f] = False
                avail[:, max(0, y - radius) : y + radius + 1, max(0, xx - radius) : xx + radius + 1] = False
    return torch.sigmoid(torch.logit(w.clamp(1e-6, 1 - 1e-6)) + drive) - w


def interleaved(
    batched, per_image, images: torch.Tensor, batch: int, ref_images: int, rounds: int
) -> dict[str, float]:
    """Images per second of ``batched(batch_images)`` and of ``per_image(images)`` (a per-image
    update), measured in alternating rounds so that both see the same machine load (the first
    batch of each is a warm-up). Timings are wall-clock (``time.perf_counter``)."""
    batched(images[:batch])
    per_image(images[:1])
    per_round = max(1, ref_images // rounds)
    cases = {"batched": (batched, batch, batch), "per-image": (per_image, per_round, 1)}
    spent = dict.fromkeys(cases, 0.0)
    done = dict.fromkeys(cases, 0)
    start = {name: first for name, (_, _, first) in cases.items()}
    for _ in range(rounds):
        for name, (fn, size, first) in cases.items():
            if start[name] + size > len(images):
                start[name] = first
            chunk = images[start[name] : start[name] + size]
            t0 = time.perf_counter()
            fn(chunk)
            spent[name] += time.perf_counter() - t0
            done[name] += len(chunk)
            start[name] += size
    return {k: done[k] / spent[k] for k in spent}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--layer", type=int, nargs="+", default=[0], help="conv layer(s) to train (0-based)")
    p.add_argument("--batch", type=int, default=128, help="the data configs' training batch")
    p.add_argument("--images", type=int, default=1024, help="images for the batched run")
    p.add_argument("--ref-images", type=int, default=64, help="images for the per-image run")
    p.add_argument("--rounds", type=int, default=8, help="alternating timing rounds")
    p.add_argument("--device", default="cpu")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. rule.dog=false")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as a snnrsa run does (snnrsa/runtime.py)
    x, _ = make_dataset(args.images + args.batch, 32, seed=0)
    images = torch.from_numpy(x).permute(0, 3, 1, 2).float().div(255).to(args.device)
    overrides = [*args.overrides, f"device={args.device}"]
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    rows = []
    for layer in args.layer:
        rule = build(overrides, seed=0)
        rule.net.to(args.device)
        if rule.cfg.threshold_mode == "adaptive":
            rule.calibrate_from(images[: args.batch], 0)  # thresholds as training would set them
        w0 = rule.weights[layer].clone()
        # same update check on one batch of 16 images
        ref = reference_update(rule, images[:16], layer)
        rule.update(images[:16], layer)
        diff = float((rule.weights[layer] - w0 - ref).abs().max())
        print(
            f"conv{layer + 1}: max |Δw batched - Δw reference| on 16 images: {diff:.2e} "
            f"(max |Δw| {float(ref.abs().max()):.2e})"
        )
        rates = interleaved(
            lambda b, layer=layer, rule=rule: rule.update(b, layer),
            lambda b, layer=layer, rule=rule: rule.weights[layer].add_(reference_update(rule, b, layer)),
            images,
            args.batch,
            args.ref_images,
            args.rounds,
        )
        rows.append((layer, rates["batched"], rates["per-image"]))
    print(
        f"\nSTDP training throughput, {args.threads} threads, {dev}, batch {args.batch}, "
        f"{args.rounds} alternating rounds"
    )
    print(f"{'layer':>6} {'batched img/s':>14} {'per-image img/s':>16} {'speed-up':>9}")
    for layer, fast, slow in rows:
        print(f"{'conv' + str(layer + 1):>6} {fast:14.1f} {slow:16.1f} {fast / slow:8.1f}x")


if __name__ == "__main__":
    main()

"""Full cost of one (rule, seed) job of the published preset (experiment=leutenegger2026_published)
on this machine, extrapolated from timed pieces on data of the real shapes (synthetic content).

A job of the preset (snnrsa/run/loop.py) does, for rules that train:
  train    max(checkpoints) = 40 epochs of 8,000 CIFAR images at 32 px, batch 128, drop_last
           (62 batches), flip + crop augmentation, the rule's ``train_batch``
  test     after every epoch and at epoch 0 (41 times): held-out accuracy on the CIFAR-10 test
           set (10,000 images at 32 px, ``rule.predict``, batch 128)
  eval     at each of the 8 checkpoints: read-out features of the 720 THINGS exemplar01 images at
           224 px (batch 64, ``rule.features``, BatchNorm per the rule's bn_eval_mode)
  rsa      at each checkpoint: 4 model RDMs (720 x 720, 1 - Pearson) and 4 layers x 6 ROIs x
           3 subjects Spearman scores over the 258,840 pairs (``run.evaluation.checkpoint_scores``)
The untrained baseline runs epoch 0 only (one test pass, one checkpoint).
Timed here, each after a warm-up, per batch (the median batch time is scaled, robust to a shared
machine's load spikes): --train-batches training batches, --test-images test images (batches of
128), --eval-images evaluation images at 224 px (batches of 64), one RSA step on 720 conditions
(the same work for every rule: timed once, on the first rule); each scaled to the preset's
counts. Not included: loading CIFAR/THINGS, the brain RDMs (computed once and cached), writing
checkpoints, results.h5 and the trajectory plot (seconds per checkpoint).

    python tools/bench_preset_cost.py            # all five rules of the preset, ~10 min on 2 cores
    python tools/bench_preset_cost.py --quick    # smoke test (~1 min): few batches, few images
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from snnrsa.config import Config, resolve
from snnrsa.data.training import TrainingSet, batches
from snnrsa.rules import build_network, make_rule
from snnrsa.run.evaluation import accuracy, extract_features, model_rdm, score_checkpoint, set_mode
from snnrsa.runtime import keep_freed_memory

CONF = Path(__file__).resolve().parents[1] / "conf"
RULES = ["untrained", "bp", "fa", "pc_published", "stdp_published"]
N_TRAIN, N_TEST, N_EVAL, EVAL_PX = 8000, 10000, 720, 224
RSA_TIME: dict[str, float] = {}
ROIS, SUBJECTS = ["V1", "V2", "V3", "hV4", "LOC", "IT"], ["sub-01", "sub-02", "sub-03"]


def preset_config(study_rule: str) -> Config:
    """The preset for one rule, with the data and brain groups swapped for synthetic stand-ins
    of the same shapes (CIFAR normalisation, batch, augmentation kept from the preset)."""
    overrides = [
        "experiment=leutenegger2026_published",
        f"study_rule={study_rule}",
        "data=synthetic",
        f"data.n_train={N_TRAIN}",
        f"data.n_test={N_TEST}",
        "data.image_size=32",
        "data.batch_size=128",
        "data.drop_last=true",
        "data.augment=true",
        "data.mean=[0.4914,0.4822,0.4465]",
        "data.std=[0.247,0.243,0.261]",
        "brain=synthetic",
        f"brain.resolution={EVAL_PX}",
        "device=cpu",
        "progress=false",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return resolve(compose("config", overrides=overrides))


class FakeBrain:
    """What ``score_checkpoint`` reads: ROI -> (subjects, n, n) RDMs, and the subject labels."""

    def __init__(self, n: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.subjects = list(SUBJECTS)
        self.rdms = {}
        for roi in ROIS:
            stack = rng.random((len(SUBJECTS), n, n))
            stack = (stack + stack.transpose(0, 2, 1)) / 2
            for s in stack:
                np.fill_diagonal(s, 0.0)
            self.rdms[roi] = stack


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(study_rule: str, args, brain: FakeBrain, data: TrainingSet, eval_images: torch.Tensor) -> dict:
    cfg = preset_config(study_rule)
    device = torch.device("cpu")
    n_epochs = max(cfg.checkpoints)
    torch.manual_seed(cfg.seed)
    net = build_network(cfg, 10)
    rule = make_rule(cfg.rule, net, n_epochs=n_epochs)
    per_epoch = N_TRAIN // cfg.data.batch_size if cfg.data.drop_last else -(-N_TRAIN // cfg.data.batch_size)
    train_s = 0.0
    if rule.trains:
        set_mode(net, True)
        gen = torch.Generator().manual_seed(cfg.seed)
        it = batches(
            data.train_images,
            data.train_labels,
            cfg.data.batch_size,
            device=device,
            gen=gen,
            drop_last=cfg.data.drop_last,
            do_augment=cfg.data.augment,
        )
        rule.train_batch(*next(it))  # warm-up (allocator, mkldnn primitives)
        per_batch = []
        for _ in range(args.train_batches):  # batch loading and augmentation included
            t0 = time.perf_counter()
            rule.train_batch(*next(it))
            per_batch.append(time.perf_counter() - t0)
        train_s = statistics.median(per_batch) * per_epoch
    set_mode(net, False)
    n_test = args.test_images
    warm = TrainingSet(
        data.train_images[:0],
        data.train_labels[:0],
        data.test_images[:128],
        data.test_labels[:128],
        data.classes,
    )
    accuracy(rule, warm, cfg.data.batch_size, device)  # warm-up
    test = TrainingSet(
        data.train_images[:0],
        data.train_labels[:0],
        data.test_images[:n_test],
        data.test_labels[:n_test],
        data.classes,
    )
    bs = cfg.data.batch_size
    pieces = [
        TrainingSet(
            test.train_images,
            test.train_labels,
            test.test_images[i : i + bs],
            test.test_labels[i : i + bs],
            data.classes,
        )
        for i in range(0, n_test - bs + 1, bs)
    ]
    test_s = statistics.median(timed(lambda p=p: accuracy(rule, p, bs, device)) for p in pieces)
    test_s *= N_TEST / bs
    set_mode(net, False, cfg.bn_eval_mode)
    n_eval = len(eval_images)
    groups = [[i] for i in range(n_eval)]
    ebs = cfg.rsa.eval_batch_size
    per_batch = []
    parts: dict[str, list] = {}
    for i in range(0, n_eval - ebs + 1, ebs):
        t0 = time.perf_counter()
        part = extract_features(rule, eval_images[i : i + ebs], groups[:ebs], cfg.rsa.layers, ebs, device)
        per_batch.append(time.perf_counter() - t0)
        for k, v in part.items():
            parts.setdefault(k, []).append(v)
    feats = {k: np.concatenate(v) for k, v in parts.items()}

    extract_features(
        rule,
        eval_images[: cfg.rsa.eval_batch_size],
        groups[:1],
        cfg.rsa.layers,
        cfg.rsa.eval_batch_size,
        device,
    )  # warm-up at 224 px
    eval_s = statistics.median(per_batch) * N_EVAL / ebs
    # RSA on N_EVAL conditions: the features are tiled up to 720 rows when fewer were run
    # (same cost; a small jitter keeps every pattern non-constant)
    full = {
        k: np.resize(v, (N_EVAL, v.shape[1])) + 1e-6 * np.random.default_rng(0).random((N_EVAL, v.shape[1]))
        for k, v in feats.items()
    }

    def rsa() -> None:
        rdms = {name: model_rdm(name, f) for name, f in full.items()}
        score_checkpoint(rdms, brain)

    if "rsa_s" not in RSA_TIME:  # the same work for every rule: timed once, on the first
        RSA_TIME["rsa_s"] = timed(rsa)
    rsa_s = RSA_TIME["rsa_s"]
    n_ckpt = len(cfg.checkpoints) if rule.trains else 1
    epochs = n_epochs if rule.trains else 0
    total = epochs * train_s + (epochs + 1) * test_s + n_ckpt * (eval_s + rsa_s)
    info = {
        "rule": study_rule,
        "train_s_per_epoch": train_s,
        "test_s": test_s,
        "eval_s": eval_s,
        "rsa_s": rsa_s,
        "epochs": epochs,
        "n_ckpt": n_ckpt,
        "train_total": epochs * train_s,
        "test_total": (epochs + 1) * test_s,
        "eval_total": n_ckpt * eval_s,
        "rsa_total": n_ckpt * rsa_s,
        "total_s": total,
    }
    if cfg.rule.name in ("pc", "pc_published"):
        info["inference_steps"] = cfg.rule.inference_steps
    return info


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--rules",
        default=",".join(RULES),
        help="comma-separated study_rule names (conf/study_rule/); bp is the "
        "reference of the ratios, pc (canonical) may be added",
    )
    ap.add_argument("--train-batches", type=int, default=10, help="timed training batches")
    ap.add_argument("--test-images", type=int, default=1280, help="timed test images (of 10,000)")
    ap.add_argument(
        "--eval-images", type=int, default=192, help="timed evaluation images (of 720, at 224 px; scaled)"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 2 batches, 256 test and 64 evaluation images per rule",
    )
    args = ap.parse_args(argv)
    keep_freed_memory()  # as a snnrsa run does (snnrsa/runtime.py)
    if args.quick:
        args.train_batches, args.test_images, args.eval_images = 2, 256, 64
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    data = TrainingSet(
        torch.randint(0, 256, (N_TRAIN, 3, 32, 32), dtype=torch.uint8, generator=g),
        torch.randint(0, 10, (N_TRAIN,), generator=g),
        torch.randint(0, 256, (args.test_images, 3, 32, 32), dtype=torch.uint8, generator=g),
        torch.randint(0, 10, (args.test_images,), generator=g),
        [str(i) for i in range(10)],
    )
    eval_images = torch.rand(args.eval_images, 3, EVAL_PX, EVAL_PX, generator=g)
    brain = FakeBrain(N_EVAL)
    load = os.getloadavg()[0]
    print(
        f"# bench_preset_cost: experiment=leutenegger2026_published, {torch.get_num_threads()} "
        f"threads, torch {torch.__version__}, load average {load:.2f}; timed "
        f"{args.train_batches} training batches, {args.test_images} test images, "
        f"{args.eval_images} evaluation images at {EVAL_PX} px, one RSA step per rule",
        flush=True,
    )
    rows = []
    for name in args.rules.split(","):
        r = measure(name, args, brain, data, eval_images)
        rows.append(r)
        print(
            f"  {name}: "
            + ", ".join(
                f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items() if k != "rule"
            ),
            flush=True,
        )
    bp = next((r for r in rows if r["rule"] == "bp"), None)
    print(
        f"\n{'rule':16s} {'train_s/ep':>10s} {'test_s':>7s} {'eval_s':>7s} {'rsa_s':>6s} "
        f"{'| train':>9s} {'test':>7s} {'eval':>7s} {'rsa':>6s} {'total_s':>8s} {'total_h':>7s} "
        f"{'x bp':>6s} {'train x bp':>10s}"
    )
    print(f"{'':16s} {'(per epoch / per checkpoint)':>33s} {'| extrapolated to the preset':>38s}")
    for r in rows:
        ratio = r["total_s"] / bp["total_s"] if bp else float("nan")
        tr = (
            r["train_s_per_epoch"] / bp["train_s_per_epoch"]
            if bp and r["train_s_per_epoch"]
            else float("nan")
        )
        print(
            f"{r['rule']:16s} {r['train_s_per_epoch']:10.1f} {r['test_s']:7.1f} "
            f"{r['eval_s']:7.1f} {r['rsa_s']:6.1f} | {r['train_total']:7.0f} "
            f"{r['test_total']:7.0f} {r['eval_total']:7.0f} {r['rsa_total']:6.0f} "
            f"{r['total_s']:8.0f} {r['total_s'] / 3600:7.2f} {ratio:6.2f} {tr:10.2f}"
        )
    if bp:
        for r in rows:
            if "inference_steps" in r:
                k = r["inference_steps"]
                print(
                    f"{r['rule']}: training epoch = {r['train_s_per_epoch'] / bp['train_s_per_epoch']:.2f}"
                    f" x BP = {r['train_s_per_epoch'] / ((k + 1) * bp['train_s_per_epoch']):.2f} x "
                    f"(T_inf + 1) x BP with T_inf = {k}; evaluation (features at 224 px) = "
                    f"{r['eval_s'] / bp['eval_s']:.2f} x BP's"
                )
    total = sum(r["total_s"] for r in rows)
    print(
        f"one seed of all {len(rows)} rules: {total / 3600:.2f} h; the preset's 5 seeds: "
        f"{5 * total / 3600:.2f} h on this machine ({torch.get_num_threads()} threads)"
    )
    print(f"# load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

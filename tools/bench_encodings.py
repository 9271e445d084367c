"""Rate against spike coding with BP on the CIFAR subset: held-out accuracy, seconds per epoch and
the ratio to the rate network, one table.

Every case trains the study's network (conv 32/64/128, FC 512, dropout 0.3, PyTorch default init,
32 px, Adam 1e-3 with the cosine schedule, augmentation) from the same seed on the same batches
for the same epochs; cases differ only in the neuron (rate ReLU at T = 1; snntorch or norse LIF at
the shipped defaults) and the input encoding (analog, Poisson, latency) and T. Images come from the
shared JPEG subset (``../shared/data/cifar10_subset``, ``data=imagefolder``). Targets (issue 15):
LIF analog T = 8 >= 0.95x the rate network's accuracy after >= 15 epochs, Poisson >= 0.85x,
latency >= 0.75x, both backends; epoch 1 clearly above chance.

Results are appended to ``--out`` (JSON lines) as each case ends, with the machine (CPU model,
torch's vector instruction set, threads) and the load average before and after; cases already
there are not run again, so a long benchmark can be stopped and resumed. Seconds are compared only
within one machine: the rate reference is run again on a machine that runs a case and has no rate
row, and each case's time ratio is against its own machine's rate row. One torch thread by default.

    python tools/bench_encodings.py                                  # all 19 cases, 15 epochs
    python tools/bench_encodings.py --epochs 2 --train-images 2000 \\
        --cases rate snntorch-analog-8 norse-analog-8 snntorch-poisson-8 snntorch-latency-8
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snnrsa.config import Config, resolve  # noqa: E402
from snnrsa.data.training import TrainingSet, batches, load_training_data  # noqa: E402
from snnrsa.rules import build_network, make_rule  # noqa: E402
from snnrsa.run.evaluation import accuracy, set_mode  # noqa: E402
from snnrsa.runtime import keep_freed_memory  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf"
CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_subset"
STUDY_BP = ["rule=bp", "backbone.dropout=0.3", "backbone.init=default"]  # conf/study_rule/bp.yaml
CPU = torch.device("cpu")


def all_cases() -> list[str]:
    """``rate`` and ``<backend>-<encoding>-<T>`` for every backend, encoding and T."""
    return ["rate"] + [f"{b}-{e}-{t}" for b in ("snntorch", "norse")
                       for e in ("analog", "poisson", "latency") for t in (4, 8, 16)]


def case_overrides(case: str) -> list[str]:
    if case == "rate":
        return ["neuron=rate", "encoding=analog"]
    backend, encoding, steps = case.split("-")
    return [f"neuron={backend}_lif", f"neuron.time_steps={int(steps)}", f"encoding={encoding}"]


def make_cfg(case: str, args) -> Config:
    n_train = "null" if args.train_images is None else args.train_images
    n_test = "null" if args.test_images is None else args.test_images
    data = ["data=imagefolder", f"data.train_dir={args.data / 'train'}",
            f"data.test_dir={args.data / 'test'}", f"data.n_train={n_train}",
            f"data.n_test={n_test}", f"data.batch_size={args.batch_size}"]
    extra = [] if case == "rate" else args.set
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return resolve(compose("config", overrides=[*STUDY_BP, *data, *case_overrides(case),
                                                     f"seed={args.seed}", *extra]))


def machine(threads: int) -> str:
    """What seconds per epoch depend on: the CPU model, torch's vector instruction set, threads."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                   if ln.startswith("model name"))
    return f"{cpu}, {torch.backends.cpu.get_cpu_capability()}, {threads} threads"


def train_case(cfg: Config, data: TrainingSet, epochs: int) -> dict:
    """Held-out accuracy after each epoch and the mean training seconds per epoch."""
    torch.manual_seed(cfg.seed)
    net = build_network(cfg, len(data.classes))
    rule = make_rule(cfg.rule, net, epochs)
    gen = torch.Generator().manual_seed(cfg.seed)
    accs, seconds = [], []
    for _ in range(epochs):
        set_mode(net, True)
        t0 = time.perf_counter()
        for x, y in batches(data.train_images, data.train_labels, cfg.data.batch_size, device=CPU,
                            gen=gen, drop_last=cfg.data.drop_last, do_augment=cfg.data.augment):
            rule.train_batch(x, y)
        rule.end_epoch()
        seconds.append(time.perf_counter() - t0)
        set_mode(net, False)
        accs.append(accuracy(rule, data, 256, CPU)[1])
    return {"acc": accs, "seconds": sum(seconds) / len(seconds)}


def table(results: dict[str, dict], rates: dict[str, dict]) -> str:
    """One line per case; the time ratio is against the rate row of the case's own machine
    (``rates``: machine -> rate row), the accuracy ratio against the current machine's."""
    rate = results.get("rate")
    machines = list(dict.fromkeys(r.get("machine", "unrecorded") for r in results.values()))
    lines = [f"{'case':22s} {'epoch-1 acc':>11s} {'final acc':>9s} {'x rate':>6s} "
             f"{'s/epoch':>8s} {'x rate':>6s} {'load':>9s}  machine"]
    for case, r in results.items():
        m = r.get("machine", "unrecorded")
        acc_ratio = f"{r['acc'][-1] / rate['acc'][-1]:.2f}" if rate else "-"
        time_ratio = f"{r['seconds'] / rates[m]['seconds']:.1f}" if m in rates else "-"
        load = "-" if "load" not in r else "{:.1f}-{:.1f}".format(*r["load"])
        lines.append(f"{case:22s} {r['acc'][0]:11.3f} {r['acc'][-1]:9.3f} {acc_ratio:>6s} "
                     f"{r['seconds']:8.1f} {time_ratio:>6s} {load:>9s}  {machines.index(m)}")
    lines += [f"machine {i}: {m}" for i, m in enumerate(machines)]
    lines.append("load: 1-minute load average before and after the case")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="*", default=all_cases(), help="rate, <backend>-<enc>-<T>")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--train-images", type=int, default=None, help="subset size (default: all)")
    p.add_argument("--test-images", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, default=CIFAR, help="folder with train/ and test/")
    p.add_argument("--set", nargs="*", default=[],
                   help="extra config overrides for the spiking cases (e.g. neuron.bn_alpha=null)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("bench_encodings.jsonl"))
    args = p.parse_args()
    unknown = [c for c in args.cases if c not in all_cases()]
    if unknown:
        raise SystemExit(f"--cases: unknown {unknown}; known {all_cases()}")
    if not (args.data / "train").is_dir():
        raise SystemExit(f"--data {args.data}: no train/ folder (the CIFAR subset of shared/data)")
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as every snnrsa run does (config keep_freed_memory: true)
    base = {"epochs": args.epochs, "train_images": args.train_images,
            "test_images": args.test_images, "batch_size": args.batch_size, "seed": args.seed}

    def key(case: str) -> dict:
        return {**base, "set": [] if case == "rate" else args.set}

    here = machine(args.threads)
    done: dict[str, dict] = {}  # case -> row, this machine's row where there is one
    rates: dict[str, dict] = {}  # machine -> its rate row
    if args.out.is_file():
        for line in args.out.read_text().splitlines():
            row = json.loads(line)
            if row["key"] != key(row["case"]):
                continue
            m = row.setdefault("machine", "unrecorded")
            if row["case"] == "rate":
                rates[m] = row
            if row["case"] not in done or m == here:
                done[row["case"]] = row
    data = load_training_data(make_cfg("rate", args).data)
    print(f"{len(data.train_labels)} training / {len(data.test_labels)} held-out images, "
          f"{args.epochs} epochs, seed {args.seed}; {here}; load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    cases = list(dict.fromkeys(["rate", *args.cases]))  # the reference first
    to_run = [c for c in cases if c not in done]
    if to_run and here not in rates:  # timings need the reference from this machine
        to_run = list(dict.fromkeys(["rate", *to_run]))
    results = {}
    for case in cases:
        if case in to_run:
            load = os.getloadavg()[0]
            row = {"case": case, "key": key(case), "machine": here,
                   **train_case(make_cfg(case, args), data, args.epochs),
                   "load": [load, os.getloadavg()[0]]}
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            done[case] = row
            if case == "rate":
                rates[here] = row
            print(f"{case}: held-out accuracy per epoch "
                  f"{' '.join(f'{a:.3f}' for a in row['acc'])}", flush=True)
        results[case] = done[case]
    print(table(results, rates))


if __name__ == "__main__":
    main()

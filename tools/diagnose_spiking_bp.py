"""Why spiking BP learns more slowly than the rate network: per-layer evidence over training.

Trains a LIF network with BP (the shipped ``rule=bp``) and, every ``--every`` batches, prints per
layer (conv1..convN, fc1..fcM, head):

- ``rate``: mean firing rate (neuron output before the pool), ``silent``: share of units that never
  fire for an image, ``dead_img``: share of images for which the whole layer stays silent;
- ``I/th``: mean and std of the input current (the BatchNorm output) in threshold units;
- ``V/th``: mean and std of the membrane (the same LIF recurrence re-run from that current) in
  threshold units, ``V>th``: share of unit-steps at or above threshold;
- ``sg``: mean surrogate derivative at the membrane, i.e. how much gradient the neuron passes;
- ``|g|`` of the layer's weight (before clipping), ``|g_rate|`` of a rate (ReLU, T = 1) twin with
  the same weights on the same batch, and their cosine (the twin has no BatchNorm in its FC
  layers, so with tdBN the fc1 and head cosines compare different functions);
- for conv layers, ``tie``: share of pool-window time slots without a single spike (their
  gradient goes to the window's first unit);
- the firing rate at each time step (deep layers start late: each layer needs its input to
  charge the membrane first).

``--compare`` instead trains each named variant (and the rate network) from the same init for
``--epochs`` epochs and prints held-out accuracy per epoch: the ablation table of the diagnosis.
Training uses one torch thread (the development machine is shared).

    python tools/diagnose_spiking_bp.py                      # layer table over epoch 1
    python tools/diagnose_spiking_bp.py --set neuron.bn_alpha=null   # before the fix
    python tools/diagnose_spiking_bp.py --compare --epochs 3        # ablation table
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snnrsa.config import Config, resolve  # noqa: E402
from snnrsa.data.training import batches, load_training_data  # noqa: E402
from snnrsa.model.network import Network  # noqa: E402
from snnrsa.neurons import RateNeuron  # noqa: E402
from snnrsa.neurons.functional import surrogate_grad_  # noqa: E402
from snnrsa.rules import build_network, make_rule  # noqa: E402
from snnrsa.run.evaluation import accuracy, set_mode  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf"
CPU = torch.device("cpu")
EQUAL = ["backbone.channels=[16,32,64]", "backbone.fc_units=[128]", "data.n_train=2000",
         "data.n_test=500"]
# variants of --compare: name -> overrides on top of the LIF network (the shipped defaults)
VARIANTS = {
    "lif defaults (tdBN alpha 1, FC too)": [],
    "before #15: plain BN (bn_alpha null)": ["neuron.bn_alpha=null"],
    "tdBN alpha 0.5": ["neuron.bn_alpha=0.5"],
    "tdBN alpha 0.5, subtract reset": ["neuron.bn_alpha=0.5", "neuron.reset=subtract"],
    # ablations before the fix: LIF in conv1 only (ReLU elsewhere), its backward replaced by
    # ReLU's (straight-through), its max-pool by an average pool
    "before #15, LIF in conv1 only": ["neuron.bn_alpha=null"],
    "before #15, LIF conv1 only, ReLU backward": ["neuron.bn_alpha=null"],
    "before #15, LIF conv1 only, avg pool": ["neuron.bn_alpha=null"],
}


class _ReluBackward(nn.Module):
    """Spikes forward, ReLU's derivative backward: tells a forward from a surrogate defect."""

    def __init__(self, lif: nn.Module) -> None:
        super().__init__()
        self.lif = lif

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        relu = torch.relu(current)
        return self.lif(current).detach() + relu - relu.detach()


def _conv1_only(net: Network, backward: str = "surrogate", pool: str = "max") -> None:
    bb = net.backbone
    for block in bb.blocks[1:]:
        block.neuron = RateNeuron()
    for fc in bb.fcs:
        fc.neuron = RateNeuron()
    if backward == "relu":
        bb.blocks[0].neuron = _ReluBackward(bb.blocks[0].neuron)
    if pool == "avg":
        bb.blocks[0].pool = nn.AvgPool2d(2)


SURGERY = {
    "before #15, LIF in conv1 only": _conv1_only,
    "before #15, LIF conv1 only, ReLU backward": lambda n: _conv1_only(n, backward="relu"),
    "before #15, LIF conv1 only, avg pool": lambda n: _conv1_only(n, pool="avg"),
}


def make_cfg(overrides: list[str]) -> Config:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return resolve(compose("config", overrides=overrides))


def lif_membrane(cur: torch.Tensor, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """Membrane (before reset) and spikes ``[T, ...]`` of the shared LIF parameterisation
    (``v <- beta * v + I``, spike at ``v > th``, reset to zero or by subtraction), which both
    backends integrate (snnrsa/neurons/functional.py)."""
    th = cfg.threshold
    v = torch.zeros_like(cur[0])
    mems, spikes = [], []
    for t in range(cur.shape[0]):
        v = cfg.beta * v + cur[t]
        s = (v > th).to(v.dtype)
        mems.append(v)
        spikes.append(s)
        v = v * (1 - s) if cfg.reset == "zero" else v - s * th
    return torch.stack(mems), torch.stack(spikes)


def capture_currents(net: Network, steps: int, batch: int) -> tuple[dict, list]:
    """Forward hooks that store each neuron's input current as ``[T, B, ...]``."""
    store: dict[str, torch.Tensor] = {}

    def hook(name):
        def fn(_module, _inp, out):
            out = out.detach()
            if out.shape[0] == batch and steps > 1:  # static input: one frame, repeated
                store[name] = out.unsqueeze(0).expand(steps, *out.shape)
            else:
                store[name] = out.unflatten(0, (steps, batch))
        return fn

    hooks = [b.bn.register_forward_hook(hook(f"conv{i + 1}"))
             for i, b in enumerate(net.backbone.blocks)]
    hooks += [f.bn.register_forward_hook(hook(f"fc{i + 1}"))
              for i, f in enumerate(net.backbone.fcs)]
    return store, hooks


def weight_grads(net: Network) -> dict[str, torch.Tensor]:
    out = {}
    for i, b in enumerate(net.backbone.blocks):
        out[f"conv{i + 1}"] = b.conv.weight.grad.clone()
    for i, f in enumerate(net.backbone.fcs):
        out[f"fc{i + 1}"] = f.linear.weight.grad.clone()
    out["head"] = net.backbone.head.weight.grad.clone()
    return out


def rate_twin_grads(twin: Network, net: Network, x, y) -> dict[str, torch.Tensor]:
    """Gradients of the rate network with the LIF network's current weights on the same batch."""
    twin.load_state_dict(net.state_dict(), strict=False)
    twin.train()
    twin.zero_grad(set_to_none=True)
    F.cross_entropy(twin(x), y).backward()
    return weight_grads(twin)


def layer_rows(cfg: Config, store: dict, outputs: dict, grads: dict, twin_grads: dict,
               logits: torch.Tensor) -> list[str]:
    th = cfg.neuron.threshold
    rows = []
    for name in outputs:
        cur = store[name].float()
        mem, spikes = lif_membrane(cur, cfg.neuron)
        per_unit = spikes.sum(0)  # [B, ...]
        silent = float((per_unit == 0).float().mean())
        dead = float((per_unit.flatten(1).sum(1) == 0).float().mean())
        sg = surrogate_grad_(mem - th, cfg.neuron.surrogate, cfg.neuron.surrogate_slope)
        tie = ""
        if name.startswith("conv"):
            pooled = F.max_pool2d(spikes.flatten(0, 1), 2)
            tie = f"{float((pooled == 0).float().mean()):.2f}"
        g, gr = grads[name].flatten(), twin_grads[name].flatten()
        rows.append(
            f"  {name:6s} rate {float(spikes.mean()):.3f} silent {silent:.2f} dead_img {dead:.2f}"
            f" | I/th {float(cur.mean()) / th:+.2f}±{float(cur.std()) / th:.2f}"
            f" | V/th {float(mem.mean()) / th:+.2f}±{float(mem.std()) / th:.2f}"
            f" V>th {float((mem > th).float().mean()):.2f} sg {float(sg.mean()):.2f}"
            f" | |g| {float(g.norm()):.2e} |g_rate| {float(gr.norm()):.2e}"
            f" cos {float(F.cosine_similarity(g, gr, 0)):+.2f}" + (f" tie {tie}" if tie else "")
            + " | rate per step " + " ".join(f"{float(r):.2f}" for r in spikes.flatten(1).mean(1)))
    g, gr = grads["head"].flatten(), twin_grads["head"].flatten()
    rows.append(f"  head   logit std {float(logits.std()):.3f} | |g| {float(g.norm()):.2e}"
                f" |g_rate| {float(gr.norm()):.2e} cos {float(F.cosine_similarity(g, gr, 0)):+.2f}")
    return rows


def diagnose(args, overrides: list[str]) -> None:
    """Train the LIF network over ``args.epochs`` epochs, printing the layer table every
    ``args.every`` batches and held-out accuracy after each epoch."""
    cfg = make_cfg(EQUAL + args.lif + overrides)
    rate_cfg = make_cfg(EQUAL + ["neuron=rate"])
    data = load_training_data(cfg.data)
    torch.manual_seed(args.seed)
    net = build_network(cfg, len(data.classes))
    twin = Network(rate_cfg, len(data.classes))
    rule = make_rule(cfg.rule, net, args.epochs)
    steps = cfg.neuron.time_steps
    print(f"LIF network: {' '.join(args.lif + overrides)}; T={steps}; "
          f"threshold {cfg.neuron.threshold}, beta {cfg.neuron.beta}, "
          f"surrogate {cfg.neuron.surrogate} slope {cfg.neuron.surrogate_slope}")
    gen = torch.Generator().manual_seed(args.seed)
    for epoch in range(1, args.epochs + 1):
        set_mode(net, True)
        total = n = 0
        for i, (x, y) in enumerate(batches(data.train_images, data.train_labels, args.batch_size,
                                           device=CPU, gen=gen, drop_last=True)):
            probe = i % args.every == 0
            store, hooks = capture_currents(net, steps, len(x)) if probe else ({}, [])
            logits, outputs = net.run(x)
            for h in hooks:
                h.remove()
            loss = F.cross_entropy(logits, y)
            rule.optim.zero_grad()
            loss.backward()
            if probe:
                grads = weight_grads(net)
                twin_g = rate_twin_grads(twin, net, x, y)
                print(f"epoch {epoch} batch {i} loss {loss.item():.3f}")
                print("\n".join(layer_rows(cfg, store, outputs, grads, twin_g, logits.detach())))
            rule.optim.step()  # clips the gradient norm first, as training does
            total, n = total + loss.item() * len(y), n + len(y)
        rule.end_epoch()
        set_mode(net, False)
        print(f"epoch {epoch}: train loss {total / n:.3f}, held-out accuracy "
              f"{accuracy(rule, data, 256, CPU)[1]:.3f}", flush=True)


def train_accuracy(overrides: list[str], epochs: int, seed: int, batch_size: int,
                   surgery=None) -> list[float]:
    """Held-out accuracy after each epoch of BP from the same init and batch order;
    ``surgery(net)`` edits the network before training (the ablations)."""
    cfg = make_cfg(overrides)
    data = load_training_data(cfg.data)
    torch.manual_seed(seed)
    net = build_network(cfg, len(data.classes))
    if surgery is not None:
        surgery(net)
    rule = make_rule(cfg.rule, net, epochs)
    gen = torch.Generator().manual_seed(seed)
    accs = []
    for _ in range(epochs):
        set_mode(net, True)
        for x, y in batches(data.train_images, data.train_labels, batch_size, device=CPU, gen=gen,
                            drop_last=True):
            rule.train_batch(x, y)
        rule.end_epoch()
        set_mode(net, False)
        accs.append(accuracy(rule, data, 256, CPU)[1])
    return accs


def compare(args) -> None:
    names = args.variants or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; known {list(VARIANTS)}")
    header = f"{'network':38s} " + " ".join(f"ep{e:<4d}" for e in range(1, args.epochs + 1))
    print(header + "  ratio to rate (last)  seconds")
    t0 = time.perf_counter()
    rate = train_accuracy(EQUAL + ["neuron=rate"], args.epochs, args.seed, args.batch_size)
    print(f"{'rate (ReLU, T=1)':38s} " + " ".join(f"{a:.3f} " for a in rate)
          + f"  {1.0:.2f}  {time.perf_counter() - t0:.0f}", flush=True)
    for name in names:
        t0 = time.perf_counter()
        accs = train_accuracy(EQUAL + args.lif + VARIANTS[name], args.epochs, args.seed,
                              args.batch_size, SURGERY.get(name))
        print(f"{name:38s} " + " ".join(f"{a:.3f} " for a in accs)
              + f"  {accs[-1] / rate[-1]:.2f}  {time.perf_counter() - t0:.0f}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lif", nargs="*", default=["neuron=snntorch_lif", "neuron.time_steps=4"],
                   help="overrides that make the spiking network (default: snntorch LIF, T=4)")
    p.add_argument("--set", nargs="*", default=[], help="extra overrides for the LIF network")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--every", type=int, default=10, help="batches between layer tables")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare", action="store_true", help="accuracy table over VARIANTS")
    p.add_argument("--variants", nargs="*", help=f"subset of {list(VARIANTS)}")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.compare:
        compare(args)
    else:
        diagnose(args, args.set)


if __name__ == "__main__":
    main()

"""Canonical predictive coding (Whittington & Bogacz 2017; Millidge et al. 2020; Pinchetti et al.
2025) on the shared backbone, with rate neurons, and its exact variant.

Every stage of the backbone (conv block, FC layer, head) predicts the next value node from the one
below: mu_l = f_l(x_{l-1}). Value nodes start at the feed-forward pass (all errors zero); the output
is clamped to the label, either as a cross-entropy energy on the head's prediction or as a one-hot
value node with a squared error.

``rule.pc=energy`` (the default): T inference steps descend the energy
F = sum_l 1/2 ||x_l - mu_l||^2 + E_out on the hidden value nodes; then every stage's parameters
move along -dF/dW_l with its input held fixed, which is the local rule error x presynaptic
activity (through the stage's own ReLU, BatchNorm and pooling). The error reaching a layer shrinks
about geometrically with its distance from the output, so at the shipped rate and step count the
updates of an untrained network point along BP's gradients (cosine >= 0.95) but lower layers'
updates are much smaller (measured per layer every epoch in ``rule_log.csv``; bounds in
``tests/rules/test_pc.py``). The alignment does not last through long training: as the head's
weights grow, inference explains the label away in the hidden nodes and the output layer's update
leaves BP's direction (the 92-image trajectory, README "Results").

``rule.pc=fixed_prediction``: the fixed-prediction assumption (Millidge, Tschantz & Buckley 2020)
keeps predictions and their Jacobians at the feed-forward pass while the errors relax. With
``inference_rate=1`` each step moves the error one stage down (the zero-divergence schedule of
Song et al. 2020), and after as many steps as hidden stages the updates equal BP's gradients to
float rounding (``tests/rules/test_pc.py``).

Canonical PC's updates are tiny in lower layers, so the default optimiser is AdamW: a coupled L2
term (Adam's ``weight_decay``) is rescaled together with the gradient, which makes the same decay
stronger, relative to the update, for PC's conv1 than for BP's by as much as PC's conv1 gradient
is smaller than BP's; decoupled decay shrinks every weight by lr * weight_decay per step whatever
its gradient.

Without a label the feed-forward state is already the energy minimum, so the RSA features (and
test predictions) of a canonical PC network are its feed-forward activity: no ``features``
override is needed.

Spiking neurons are rejected: value nodes are one static activity per unit that inference relaxes
to a fixed point, which a spike train does not have (``require_static_rate``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from snnrsa.model.backbone import Backbone, fold_time
from snnrsa.model.network import Network
from snnrsa.rules.base import Rule, frozen_bn_stats, training_mode_probe
from snnrsa.rules.optim import Optimiser
from snnrsa.schema import ConfigError

PROBE_SIZE = 64
MAX_HALVINGS = 10  # inference: a step that raises the energy is retried at up to 2^-10 of the rate
__all__ = ["PC", "frozen_bn_stats", "stage_parameters", "stages"]


def require_static_rate(cfg: Any) -> None:
    """Reject spiking neurons and T > 1 for the PC rules, naming the keys."""
    if cfg.neuron.name != "rate" or cfg.neuron.time_steps != 1:
        raise ConfigError(
            f"rule={cfg.rule.name} with neuron={cfg.neuron.name} and "
            f"neuron.time_steps={cfg.neuron.time_steps}: "
            "predictive coding relaxes one static value per unit to a fixed point, which spike "
            "trains do not have; use neuron=rate with neuron.time_steps=1"
        )


def to_vector(backbone: Backbone, x: torch.Tensor) -> torch.Tensor:
    """A conv map sequence ``[T, B, C, H, W]`` as FC1's input ``[T, B, F]``, pooled to
    ``pool_to`` first when larger, exactly as ``Backbone.forward`` does."""
    side = backbone.pool_to
    if x.shape[-1] != side or x.shape[-2] != side:
        x = fold_time(lambda f: F.adaptive_avg_pool2d(f, side), x)
    return x.flatten(2)


def stages(net: Network) -> list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
    """The backbone as a chain of (name, prediction function) from the encoded input to the
    class scores: conv1..N, fc1..M, output (head and read-out)."""
    bb = net.backbone
    chain: list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = [
        (f"conv{i + 1}", block) for i, block in enumerate(bb.blocks)
    ]
    n_conv = len(chain)
    chain += [(f"fc{i + 1}", fc) for i, fc in enumerate(bb.fcs)]
    chain.append(("output", lambda x: net.readout(fold_time(bb.head, x))))
    name, first = chain[n_conv]  # the first non-conv stage receives the flattened conv map
    chain[n_conv] = (name, lambda x: first(to_vector(bb, x)))
    return chain


def stage_parameters(net: Network) -> list[tuple[str, list[nn.Parameter]]]:
    """The trainable parameters of each stage of ``stages``, in the same order."""
    bb = net.backbone
    mods: list[tuple[str, list[nn.Module]]] = [
        *((f"conv{i + 1}", [b]) for i, b in enumerate(bb.blocks)),
        *((f"fc{i + 1}", [fc]) for i, fc in enumerate(bb.fcs)),
        ("output", [bb.head, net.readout]),
    ]
    return [(name, [p for m in ms for p in m.parameters() if p.requires_grad])
            for name, ms in mods]


def cosine_and_ratio(update: list[torch.Tensor], reference: list[torch.Tensor]
                     ) -> tuple[float, float]:
    """Cosine between two parameter lists taken as one vector each, and the norm ratio
    |update| / |reference| (float64; no epsilon: lower layers' PC updates are tiny)."""
    a = torch.cat([g.detach().double().flatten() for g in update])
    b = torch.cat([g.detach().double().flatten() for g in reference])
    return float(a @ b / (a.norm() * b.norm())), float(a.norm() / b.norm())


class PC(Rule):
    """Inference on value nodes (or on errors under fixed predictions), then local updates of
    every stage from its prediction error; the shared optimiser (schedule, clipped step) applies
    the updates."""

    @classmethod
    def check(cls, cfg: Any) -> None:
        require_static_rate(cfg)
        if cfg.backbone.dropout > 0:
            raise ConfigError("rule=pc with backbone.dropout > 0: a dropout mask would change the "
                              "predictions between inference steps; set backbone.dropout=0")
        hidden = len(cfg.backbone.channels) + len(cfg.backbone.fc_units)
        if cfg.rule.pc == "fixed_prediction" and cfg.rule.inference_steps < hidden:
            raise ConfigError(
                f"rule.pc=fixed_prediction with rule.inference_steps={cfg.rule.inference_steps}: "
                f"the error moves one stage per step, so the lowest of the {hidden} hidden stages "
                f"would get none; use rule.inference_steps >= {hidden}")

    def __init__(self, cfg: Any, net: Network, n_epochs: int) -> None:
        super().__init__(cfg, net, n_epochs)
        self.optim = Optimiser.from_config(cfg, net.parameters(), n_epochs)
        if cfg.inference_steps < 0 or cfg.inference_rate <= 0:
            raise ConfigError(f"rule.inference_steps={cfg.inference_steps} must be >= 0 and "
                              f"rule.inference_rate={cfg.inference_rate} > 0")
        self.stages = stages(net)
        self.params = [p for p in net.parameters() if p.requires_grad]
        index = {id(p): i for i, p in enumerate(self.params)}
        self.stage_index = [(name, [index[id(p)] for p in ps])
                            for name, ps in stage_parameters(net)]
        self.epoch = 0
        self.rows: list[dict] = []
        self.probe: tuple[torch.Tensor, torch.Tensor] | None = None
        self._sums = torch.zeros(2, len(self.stages), dtype=torch.float64)
        self._seen = 0

    def feedforward(self, x0: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Hidden value nodes at their predictions (zero error), and the class scores."""
        xs, x = [], x0
        for _, f in self.stages[:-1]:
            x = f(x)
            xs.append(x)
        return xs, self.stages[-1][1](x)

    def output_energy(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Energy of the clamped label at the output, summed over the batch."""
        if self.cfg.output_energy == "ce":
            return F.cross_entropy(logits, labels, reduction="sum")
        target = F.one_hot(labels, logits.shape[1]).to(logits)
        return 0.5 * (target - logits).pow(2).sum()

    def energies(self, x0: torch.Tensor, xs: list[torch.Tensor],
                 labels: torch.Tensor) -> list[torch.Tensor]:
        """Energy of each stage, summed over the batch: 1/2 squared prediction error for hidden
        stages, then the output energy of the clamped label."""
        out = []
        for (_, f), below, x in zip(self.stages[:-1], [x0, *xs[:-1]], xs):
            out.append(0.5 * (x - f(below)).pow(2).sum())
        out.append(self.output_energy(self.stages[-1][1](xs[-1]), labels))
        return out

    def infer(self, x0: torch.Tensor, labels: torch.Tensor, steps: int
              ) -> tuple[list[torch.Tensor], torch.Tensor, list[list[float]]]:
        """Feed-forward initialisation (the one pass that updates BatchNorm statistics), then
        ``steps`` gradient steps on the hidden value nodes. Returns the value nodes, the
        feed-forward class scores and the per-stage energies before each step and at the end.

        Inference is descent on the energy: a step that would raise it is retried at half the
        rate (kept for the rest of this inference). Without it, inference diverged in epoch 12
        of the 92-image trajectory (hidden energies 10^5 after 8 steps on the probe) and
        destroyed canonical PC; with it, epoch 11 there was bit-identical (no step retried)."""
        with torch.no_grad():
            xs, logits = self.feedforward(x0)
        xs = [x.detach().requires_grad_(True) for x in xs]
        rate, trace = self.cfg.inference_rate, []
        with frozen_bn_stats(self.net):
            energy = torch.stack(self.energies(x0, xs, labels))
            for _ in range(steps):
                trace.append(energy.detach().tolist())
                grads = torch.autograd.grad(energy.sum(), xs)
                for _ in range(MAX_HALVINGS + 1):
                    trial = [(x - rate * g).detach().requires_grad_(True) for x, g in zip(xs, grads)]
                    new = torch.stack(self.energies(x0, trial, labels))
                    if new.sum() <= energy.sum():
                        xs, energy = trial, new
                        break
                    rate /= 2
            trace.append(energy.detach().tolist())
        return [x.detach() for x in xs], logits, trace

    def fixed_prediction(self, x0: torch.Tensor, labels: torch.Tensor, steps: int
                         ) -> tuple[torch.Tensor, torch.Tensor, list[list[float]]]:
        """Errors under fixed predictions: predictions mu_l and their Jacobians J_l stay at the
        feed-forward pass (the one pass, which updates BatchNorm statistics) while
        eps_l <- eps_l + rate * (J_{l+1}^T eps_{l+1} - eps_l), the top hidden error driven by
        -dE_out/dx. Returns the objective whose parameter gradients are the updates,
        sum_l <mu_l, -eps_l> + E_out (batch mean), the class scores and the energies per step."""
        ins, mus = [x0], []
        for _, f in self.stages[:-1]:
            mus.append(f(ins[-1]))
            ins.append(mus[-1].detach().requires_grad_(True))
        logits = self.stages[-1][1](ins[-1])
        e_out = self.output_energy(logits, labels)
        top = -torch.autograd.grad(e_out, ins[-1], retain_graph=True)[0]
        eps = [torch.zeros_like(m) for m in mus]

        def energies() -> list[float]:
            return [0.5 * float(e.pow(2).sum()) for e in eps] + [float(e_out.detach())]

        trace = [energies()]
        for _ in range(steps):
            drive = [torch.autograd.grad(mu, x, e, retain_graph=True)[0]
                     for mu, x, e in zip(mus[1:], ins[1:-1], eps[1:])] + [top]
            eps = [e + self.cfg.inference_rate * (d - e) for e, d in zip(eps, drive)]
            trace.append(energies())
        objective = sum((mu * -e).sum() for mu, e in zip(mus, eps)) + e_out
        return objective / len(labels), logits.detach(), trace

    def gradients(self, x0: torch.Tensor, labels: torch.Tensor, steps: int
                  ) -> tuple[list[torch.Tensor], torch.Tensor, list[list[float]]]:
        """PC's update of every parameter (dF/dW, batch mean; ``self.params`` order) after
        ``steps`` of inference, the feed-forward class scores and the per-stage energies."""
        if self.cfg.pc == "fixed_prediction":
            objective, logits, trace = self.fixed_prediction(x0, labels, steps)
        else:  # each stage sees its input as a constant: only its own error reaches its weights
            xs, logits, trace = self.infer(x0, labels, steps)
            with frozen_bn_stats(self.net):
                objective = torch.stack(self.energies(x0, xs, labels)).sum() / len(labels)
        return self._grads(objective), logits, trace

    def _grads(self, objective: torch.Tensor) -> list[torch.Tensor]:
        grads = torch.autograd.grad(objective, self.params, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(self.params, grads)]

    def train_batch(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
        if self.probe is None:  # the first batch, before any update, is the fixed probe
            self.probe = images[:PROBE_SIZE].clone(), labels[:PROBE_SIZE].clone()
            self.rows += [{"epoch": 0, "layer": name, **d}
                          for name, d in self.diagnostics().items()]
        x0 = self.net.encoder(images)
        grads, logits, trace = self.gradients(x0, labels, self.cfg.inference_steps)
        self.optim.zero_grad()
        for p, g in zip(self.params, grads):
            p.grad = g
        self.optim.step()
        self._sums += torch.tensor([trace[0], trace[-1]], dtype=torch.float64)
        self._seen += len(labels)
        loss = float(F.cross_entropy(logits, labels, reduction="sum"))
        return loss, int((logits.argmax(1) == labels).sum())

    def diagnostics(self) -> dict[str, dict[str, float]]:
        """On the probe batch, as training sees it (batch statistics, nothing updated): per
        stage, the cosine and norm ratio of PC's update to BP's gradient of the output energy
        (batch mean), and the probe's energy per image before and after inference."""
        images, labels = self.probe
        with training_mode_probe(self.net):
            bp = self._grads(self.output_energy(self.net(images), labels) / len(labels))
        with training_mode_probe(self.net):
            pc, _, trace = self.gradients(self.net.encoder(images), labels,
                                          self.cfg.inference_steps)
        out = {}
        for (name, idx), before, after in zip(self.stage_index, trace[0], trace[-1]):
            cos, ratio = cosine_and_ratio([pc[i] for i in idx], [bp[i] for i in idx])
            out[name] = {"cosine_bp": cos, "norm_ratio_bp": ratio,
                         "probe_energy_start": before / len(labels),
                         "probe_energy_end": after / len(labels)}
        return out

    def end_epoch(self) -> None:
        self.optim.end_epoch()
        self.epoch += 1
        mean = (self._sums / max(self._seen, 1)).tolist()
        diag = self.diagnostics() if self.probe is not None else {}
        for i, (name, _) in enumerate(self.stages):
            self.rows.append({"epoch": self.epoch, "layer": name,
                              "energy_start": mean[0][i], "energy_end": mean[1][i],
                              **diag.get(name, {})})
        self._sums.zero_()
        self._seen = 0

    def log_rows(self) -> list[dict]:
        """Per epoch (0 = before the first update) and stage: mean training energy per image
        after the feed-forward initialisation (only the output's is non-zero) and after
        inference; on the fixed probe batch, the cosine and norm ratio of PC's update to BP's
        gradient and the energy per image before and after inference."""
        return list(self.rows)

    def state_dict(self) -> dict[str, Any]:
        return {**self.optim.state_dict(), "epoch": self.epoch, "rows": list(self.rows),
                "probe": self.probe}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optim.load_state_dict(state)
        self.epoch, self.rows = state["epoch"], list(state["rows"])
        self.probe = state.get("probe")

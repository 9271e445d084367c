"""Canonical predictive coding (Whittington & Bogacz 2017; Millidge et al. 2020; Pinchetti et al.
2025) on the shared backbone, with rate neurons.

Every stage of the backbone (conv block, FC layer, head) predicts the next value node from the one
below: mu_l = f_l(x_{l-1}). Value nodes start at the feed-forward pass (all errors zero); the output
is clamped to the label, either as a cross-entropy energy on the head's prediction or as a one-hot
value node with a squared error. T inference steps descend the energy
F = sum_l 1/2 ||x_l - mu_l||^2 + E_out on the hidden value nodes; then every stage's parameters
move along -dF/dW_l with its input held fixed, which is the local rule error x presynaptic
activity (through the stage's own ReLU, BatchNorm and pooling). With small inference steps these
updates point along BP's gradients (the standard correctness check, ``tests/test_pc.py``).

Without a label the feed-forward state is already the energy minimum, so the RSA features (and
test predictions) of a canonical PC network are its feed-forward activity: no ``features``
override is needed.

Spiking neurons are rejected: value nodes are one static activity per unit that inference relaxes
to a fixed point, which a spike train does not have (``require_static_rate``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from snnrsa.backbone import Backbone, fold_time
from snnrsa.network import Network
from snnrsa.rules.base import Rule
from snnrsa.rules.optim import Optimiser
from snnrsa.schema import ConfigError


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


@contextmanager
def frozen_bn_stats(net: nn.Module) -> Iterator[None]:
    """BatchNorm keeps using batch statistics but stops updating its running statistics, so the
    repeated predictions of inference do not count as extra batches."""
    bns = [m for m in net.modules()
           if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in bns:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in bns:
            m.track_running_stats = True


class PC(Rule):
    """Inference on value nodes, then local updates of every stage from its prediction error;
    the shared optimiser (schedule, clipped step) applies the updates."""

    @classmethod
    def check(cls, cfg: Any) -> None:
        require_static_rate(cfg)
        if cfg.backbone.dropout > 0:
            raise ConfigError("rule=pc with backbone.dropout > 0: a dropout mask would change the "
                              "predictions between inference steps; set backbone.dropout=0")

    def __init__(self, cfg: Any, net: Network, n_epochs: int) -> None:
        super().__init__(cfg, net, n_epochs)
        self.optim = Optimiser.from_config(cfg, net.parameters(), n_epochs)
        if cfg.inference_steps < 0 or cfg.inference_rate <= 0:
            raise ConfigError(f"rule.inference_steps={cfg.inference_steps} must be >= 0 and "
                              f"rule.inference_rate={cfg.inference_rate} > 0")
        self.stages = stages(net)
        self.epoch = 0
        self.rows: list[dict] = []
        self._sums = torch.zeros(2, len(self.stages), dtype=torch.float64)
        self._seen = 0

    def feedforward(self, x0: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Hidden value nodes at their predictions (zero error), and the class scores."""
        xs, x = [], x0
        for _, f in self.stages[:-1]:
            x = f(x)
            xs.append(x)
        return xs, self.stages[-1][1](x)

    def energies(self, x0: torch.Tensor, xs: list[torch.Tensor],
                 labels: torch.Tensor) -> list[torch.Tensor]:
        """Energy of each stage, summed over the batch: 1/2 squared prediction error for hidden
        stages, then the output energy of the clamped label."""
        out = []
        for (_, f), below, x in zip(self.stages[:-1], [x0, *xs[:-1]], xs):
            out.append(0.5 * (x - f(below)).pow(2).sum())
        logits = self.stages[-1][1](xs[-1])
        if self.cfg.output_energy == "ce":
            out.append(F.cross_entropy(logits, labels, reduction="sum"))
        else:
            target = F.one_hot(labels, logits.shape[1]).to(logits)
            out.append(0.5 * (target - logits).pow(2).sum())
        return out

    def infer(self, x0: torch.Tensor, labels: torch.Tensor, steps: int
              ) -> tuple[list[torch.Tensor], torch.Tensor, list[list[float]]]:
        """Feed-forward initialisation (the one pass that updates BatchNorm statistics), then
        ``steps`` gradient steps on the hidden value nodes. Returns the value nodes, the
        feed-forward class scores and the per-stage energies before each step and at the end."""
        with torch.no_grad():
            xs, logits = self.feedforward(x0)
        xs = [x.detach().requires_grad_(True) for x in xs]
        trace = []
        with frozen_bn_stats(self.net):
            for _ in range(steps):
                energy = torch.stack(self.energies(x0, xs, labels))
                trace.append(energy.detach().tolist())
                grads = torch.autograd.grad(energy.sum(), xs)
                with torch.no_grad():
                    for x, g in zip(xs, grads):
                        x.sub_(self.cfg.inference_rate * g)
            with torch.no_grad():
                trace.append(torch.stack(self.energies(x0, xs, labels)).tolist())
        return [x.detach() for x in xs], logits, trace

    def weight_gradients(self, x0: torch.Tensor, xs: list[torch.Tensor],
                         labels: torch.Tensor) -> None:
        """Set every parameter's ``.grad`` to dF/dW at the value nodes ``xs`` (batch mean): each
        stage sees its input as a constant, so only its own error reaches its weights."""
        self.optim.zero_grad()
        with frozen_bn_stats(self.net):
            energy = torch.stack(self.energies(x0, xs, labels)).sum() / len(labels)
        energy.backward()

    def train_batch(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
        x0 = self.net.encoder(images)
        xs, logits, trace = self.infer(x0, labels, self.cfg.inference_steps)
        self.weight_gradients(x0, xs, labels)
        self.optim.step()
        self._sums += torch.tensor([trace[0], trace[-1]], dtype=torch.float64)
        self._seen += len(labels)
        loss = float(F.cross_entropy(logits, labels, reduction="sum"))
        return loss, int((logits.argmax(1) == labels).sum())

    def end_epoch(self) -> None:
        self.optim.end_epoch()
        self.epoch += 1
        mean = (self._sums / max(self._seen, 1)).tolist()
        for i, (name, _) in enumerate(self.stages):
            self.rows.append({"epoch": self.epoch, "layer": name,
                              "energy_start": mean[0][i], "energy_end": mean[1][i]})
        self._sums.zero_()
        self._seen = 0

    def log_rows(self) -> list[dict]:
        """Per epoch and stage: mean energy per image after the feed-forward initialisation
        (only the output's is non-zero) and after inference."""
        return list(self.rows)

    def state_dict(self) -> dict[str, Any]:
        return {**self.optim.state_dict(), "epoch": self.epoch, "rows": list(self.rows)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optim.load_state_dict(state)
        self.epoch, self.rows = state["epoch"], list(state["rows"])

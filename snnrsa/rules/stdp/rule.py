"""The canonical STDP rule: builds its blocks, then per batch: input spike times, layer I/O,
k-WTA winners, soft-bounded update (greedy layer-wise), with its logs and snapshots."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from snnrsa.model.backbone import BlockSpec, fold_time
from snnrsa.model.network import Network, pool_conv
from snnrsa.rules.stdp.analysis import effective_rf, orientation_tuning
from snnrsa.rules.stdp.fast import LayerIO, fast_path_ok, gained_weight, if_first_spikes
from snnrsa.rules.stdp.functional import (
    batch_rates,
    convergence,
    cumulative_frames,
    first_spike_times,
    k_winners,
    leaky_cumsum,
    per_layer,
    pointwise_mask,
    pool_times,
    soft_bound_step,
    spike_train,
    stdp_drive,
)
from snnrsa.rules.stdp.layerwise import LayerwiseSTDP
from snnrsa.rules.stdp.modules import (
    DoGEncoder,
    FirstSpikeNeuron,
    FirstSpikePool,
    RankOrderEncoder,
    check_input_size,
    encode_times,
)
from snnrsa.schema import ConfigError


def require_spike_input(cfg: Any) -> None:
    """STDP rules learn from spike timing: latency or Poisson input over >= 2 steps (unless the
    rule brings its own rank-order code)."""
    if getattr(cfg.rule, "coding", "encoding") == "rank_order":
        return
    enc, steps = cfg.encoding.name, cfg.neuron.time_steps
    if enc not in ("latency", "poisson") or steps < 2:
        raise ConfigError(
            f"rule={cfg.rule.name} needs spike input: encoding={enc} with neuron.time_steps="
            f"{steps}; use encoding=latency (or poisson) and neuron.time_steps >= 2"
        )


def _int(x: Any) -> int:
    return int(x[0] if isinstance(x, tuple) else x)


def strict_threshold(value: float) -> float:
    """The float32 just above ``value``: ``v >= it`` is SpykeTorch's ``v > value``."""
    t = torch.tensor(float(value), dtype=torch.float32)
    return float(torch.nextafter(t, torch.tensor(math.inf)))


class STDP(LayerwiseSTDP):
    """Greedy layer-wise, batched, competitive conv STDP; it has no class read-out of its own."""

    spiking = True

    @classmethod
    def check(cls, cfg: Any) -> None:
        """Spike input (own rank-order code, or latency/Poisson) and consistent settings."""
        rule = cfg.rule
        require_spike_input(cfg)
        check_input_size(cfg)
        if rule.coding == "rank_order" and rule.time_steps < 2:
            raise ConfigError(f"rule.time_steps={rule.time_steps} must be >= 2")
        if any(not 0 < q < 1 for q in rule.threshold_quantiles):
            raise ConfigError(f"rule.threshold_quantiles={rule.threshold_quantiles} must lie in (0, 1)")
        if rule.pointwise_inhibition != "off" and not rule.one_spike:
            raise ConfigError(
                f"rule.pointwise_inhibition={rule.pointwise_inhibition} needs rule.one_spike=true"
            )
        if not 0 < rule.beta <= 1:
            raise ConfigError(f"rule.beta={rule.beta} must lie in (0, 1]")
        if not (math.isfinite(rule.homeostasis_tau) and rule.homeostasis_tau >= 0):
            raise ConfigError(f"rule.homeostasis_tau={rule.homeostasis_tau} must be >= 0 images (0: off)")
        if not 0 < rule.homeostasis_max < 1:
            raise ConfigError(
                f"rule.homeostasis_max={rule.homeostasis_max} must lie in (0, 1) (the threshold stays > 0)"
            )
        if any(n <= 0 for n in rule.layer_images):
            raise ConfigError(f"rule.layer_images={rule.layer_images} must be > 0 images per layer")

    @classmethod
    def block_spec(cls, cfg: Any) -> BlockSpec:
        """Input code (rank-order DoG, or DoG maps before the encoding group), conv weights drawn
        in [0, 1] and frozen to gradients, no BatchNorm, first-spike neurons and, for one-spike
        neurons, earliest-spike pools."""
        rule = cfg.rule
        rank_order = rule.coding == "rank_order"
        dog = rank_order or rule.dog
        steps = rule.time_steps if rank_order else cfg.neuron.time_steps
        adaptive = rule.threshold_mode == "adaptive"

        def encoder(code: nn.Module) -> nn.Module:
            if rank_order:
                return RankOrderEncoder(rule.time_steps, rule.dog_sigmas, rule.dog_size,
                                        rule.dog_threshold, rule.dog_padding,
                                        rule.normalization_radius, rule.input_size)
            return DoGEncoder(code, rule.dog_sigmas, rule.dog_size, rule.input_size) if rule.dog else code

        def conv(i: int, c: nn.Conv2d) -> nn.Conv2d:
            if i == 0 and dog:  # on/off maps in: two input channels
                c = nn.Conv2d(2, c.out_channels, c.kernel_size, padding=c.padding, bias=False)
            with torch.no_grad():
                c.weight.normal_(rule.init_mean, rule.init_std).clamp_(0, 1)
            return c.requires_grad_(False)

        def neuron(i: int, c: nn.Conv2d) -> nn.Module:
            fan_in = c.in_channels * c.kernel_size[0] * c.kernel_size[1]
            th = per_layer(rule.thresholds, i) * (fan_in if rule.threshold_unit == "fan_in" else 1.0)
            return FirstSpikeNeuron(
                strict_threshold(th),
                rule.beta,
                rule.one_spike,
                rule.pointwise_inhibition == "always",
                per_layer(rule.threshold_quantiles, i) if adaptive else None,
                c.out_channels if rule.homeostasis_tau > 0 else None,
            )

        def pool(i: int, p: nn.Module) -> nn.Module:
            return FirstSpikePool(steps, 2, _int(p.padding))

        return BlockSpec("stdp", encoder, conv, lambda i, c: nn.Identity(), neuron,
                         pool if rule.one_spike else None)

    def __init__(self, cfg: Any, net: Network, n_epochs: int) -> None:
        super().__init__(cfg, net, n_epochs)
        self.time_steps = net.encoder.time_steps
        blocks = net.backbone.blocks
        self.wins = [torch.zeros(b.conv.out_channels, dtype=torch.long) for b in blocks]
        self._last_images: torch.Tensor | None = None
        self._last_weights: list[torch.Tensor] | None = None
        self._last_wins: list[torch.Tensor] = [w.clone() for w in self.wins]
        self.fast_path = True  # False: every layer runs the conv over all T frames (for checks)

    def conv_features(self, seq: torch.Tensor) -> torch.Tensor:
        """Spike counts, or with ``feature_code=latency`` (T - t)/T of each unit's first spike."""
        if self.cfg.feature_code == "latency":
            t = first_spike_times(seq)
            return (len(seq) - t).to(seq.dtype) / len(seq)
        return seq.mean(0)

    @torch.no_grad()
    def features(self, images: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        """``feature_code=potential``: each conv layer's membrane potential at the end of the
        presentation (its integrated input, sum of w over the inputs that spiked; before the
        threshold and the pool), GAP'd or flattened as ``rsa.layer_pooling`` says; FC layers as
        their input current. Spike read-outs (count, latency): ``LayerwiseSTDP.features``."""
        if self.cfg.feature_code != "potential":
            return super().features(images, layers)
        feats = super().features(images, [n for n in layers if not n.startswith("conv")])
        blocks, steps = self.net.backbone.blocks, self.time_steps
        convs = [int(n[4:]) - 1 for n in layers if n.startswith("conv")]
        if convs:
            for i, io in enumerate(self.all_io(images, max(convs))):
                if i in convs:
                    b = blocks[i]
                    v = torch.nn.functional.conv2d(
                        (io.t_pre < steps).to(images.dtype), gained_weight(b), padding=b.conv.padding
                    )
                    feats[f"conv{i + 1}"] = pool_conv(v, self.net.layer_pooling, self.net.pool_grid)
        return feats

    def pointwise_at(self, layer: int, learning: int | None) -> bool:
        """Whether pointwise inhibition acts on ``layer``'s output (``learning``: the layer in
        training, None at evaluation)."""
        mode = self.cfg.pointwise_inhibition
        return mode == "always" or (mode == "learning" and layer == learning)

    @torch.no_grad()
    def layer_io(self, images: torch.Tensor, layer: int) -> LayerIO:
        """Input and output first-spike times of conv block ``layer`` as it learns."""
        return self.all_io(images, layer, learning=layer)[layer]

    @torch.no_grad()
    def all_io(
        self, images: torch.Tensor, last: int | None = None, learning: int | None = None
    ) -> list[LayerIO]:
        """``LayerIO`` of conv blocks 0..``last`` (default: all), as the network runs while
        ``learning`` trains (the recipe: pointwise inhibition on that layer's output and on its
        pooled input) or at evaluation (None). The fast path gives potentials for the learning
        layer only (zeros elsewhere).

        One-spike IF layers take ``if_first_spikes`` (no time-expanded tensors); the rest run the
        conv on all T cumulative frames."""
        blocks = self.net.backbone.blocks
        last = len(blocks) - 1 if last is None else last
        steps, beta = self.time_steps, self.cfg.beta
        t_in = encode_times(self.net.encoder, images) if self.cfg.one_spike else None
        x = cum = None
        if t_in is None:
            x = self.net.encoder(images)  # [T, B, C, H, W] input spikes
            t_in, cum = first_spike_times(x), leaky_cumsum(x, beta)
        out: list[LayerIO] = []
        for i, block in enumerate(blocks[: last + 1]):
            neuron, pointwise = block.neuron, self.pointwise_at(i, learning)
            if self.fast_path and fast_path_ok(block, beta):
                t_out, v_out = if_first_spikes(
                    t_in, gained_weight(block), block.conv.padding[0], neuron.threshold, steps,
                    pointwise, potentials=i == learning,  # only the learning layer's k-WTA needs them
                )
            else:
                if cum is None:
                    cum = (
                        cumulative_frames(t_in, steps, beta, images.dtype)
                        if beta == 1.0
                        else leaky_cumsum(spike_train(t_in.long(), steps, images.dtype), beta)
                    )
                if neuron.one_spike:
                    t_out, v_out = neuron.fire(fold_time(block.conv, cum), pointwise)
                else:
                    current = fold_time(block.conv, x)
                    if not bool(neuron.calibrated):
                        neuron.calibrate(leaky_cumsum(current, beta))
                    spikes, pots = neuron.run_reset(current)
                    t_out = first_spike_times(spikes)
                    v_out = pots.gather(0, t_out.clamp(max=steps - 1).unsqueeze(0)).squeeze(0)
                    v_out = v_out.masked_fill(t_out >= steps, 0.0)
            out.append(LayerIO(t_in.long(), t_out, v_out, steps))
            if i < last:
                if neuron.one_spike:
                    pool = block.pool
                    t_in = pool.times(t_out) if isinstance(pool, FirstSpikePool) else pool_times(t_out)
                    below = learning is not None and i == learning - 1
                    if below and self.cfg.pointwise_inhibition == "learning":
                        # the recipe inhibits the pooled input of the layer in training (earliest
                        # feature per position, the lowest index on ties)
                        keep = pointwise_mask(t_in, torch.zeros_like(t_in, dtype=images.dtype), steps)
                        t_in = t_in.masked_fill(~keep, steps)
                    cum = None
                else:
                    x = fold_time(block.pool, spikes)
                    t_in, cum = first_spike_times(x), leaky_cumsum(x, beta)
        return out

    @torch.no_grad()
    def calibrate_from(self, images: torch.Tensor, layer: int) -> None:
        """Set the adaptive thresholds of ``layer`` and the layers above from ``images``: called
        when a layer's training starts, since its input has changed with the layers below."""
        for b in self.net.backbone.blocks[layer:]:
            b.neuron.recalibrate()
        self.all_io(images, learning=layer)

    @torch.no_grad()
    def update(self, images: torch.Tensor, layer: int) -> dict[str, Any]:
        """One batched STDP step on ``layer``; returns what the step saw (for dynamics)."""
        cfg, block = self.cfg, self.net.backbone.blocks[layer]
        io = self.layer_io(images, layer)
        k, radius = per_layer(cfg.k_winners, layer), per_layer(cfg.inhibition_radius, layer)
        win = k_winners(io.t_post, io.v_post, self.time_steps, k, radius,
                        exclusive=self.pointwise_at(layer, layer))
        w = block.conv.weight
        a_plus, a_minus = batch_rates(cfg, self.seen[layer], len(images), layer)
        drive, events = stdp_drive(io.t_pre, win, w.shape[0], w.shape[-1], block.conv.padding[0],
                                   self.time_steps, a_plus.to(w.device), a_minus.to(w.device))
        w.copy_(soft_bound_step(w, drive, cfg.batch_update))
        self.wins[layer] += events.long().cpu()
        self.homeostasis(block.neuron, events, len(images))
        return {"io": io, "events": events, "a_plus": float(a_plus[-1])}

    @torch.no_grad()
    def homeostasis(self, neuron: FirstSpikeNeuron, events: torch.Tensor, n_images: int) -> None:
        """Move the training layer's threshold offsets toward equal win shares, at a rate of
        1 / homeostasis_tau per image (see STDPConfig)."""
        tau, total = self.cfg.homeostasis_tau, float(events.sum())
        if neuron.offset is None or tau <= 0 or total <= 0:
            return
        share = events.to(neuron.offset) * (len(events) / total)
        lim = self.cfg.homeostasis_max
        neuron.offset.add_(min(n_images / tau, 1.0) * (share - 1.0)).clamp_(-lim, lim)

    def train_batch(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
        self._last_images = images[:64].detach()
        if self.done:
            return math.nan, 0
        layer = self.layer
        if self.seen[layer] == 0 and self.cfg.threshold_mode == "adaptive":
            self.calibrate_from(images, layer)
        seen = self.update(images, layer)
        n = len(images)
        self.seen[layer] += n
        self.images += n
        c = convergence(self.weights[layer])
        rate, silent = seen["io"].fired_share()
        self.rows.append(
            {
                "images": self.images,
                "layer": layer,
                "a_plus": seen["a_plus"],
                "C": c,
                "threshold": float(self.net.backbone.blocks[layer].neuron.threshold),
                "rate": rate,
                "winners": int((seen["events"] > 0).sum()),
                "silent": silent,
            }
        )
        if self.seen[layer] >= per_layer(self.cfg.layer_images, layer) or (c < self.cfg.convergence_stop):
            self.layer += 1
        return math.nan, 0

    @torch.no_grad()
    def dynamics(self, bins: int = 20) -> dict[str, np.ndarray]:
        """The rule's state now, per conv layer ``conv<i>_<name>``: weight mean, std, histogram
        (``bins`` fixed bins on [0, 1]), share at the bounds (< 0.01 or > 0.99), C, mean |Δw| and
        max |Δw| since the last call; on the last training batch (up to 64 images): firing rate,
        spike-time histogram (T + 1 bins, the last one silent units), share of silent features;
        WTA winners since the last call (distinct features and wins per feature); Conv1 receptive
        fields ``[C, k, k]`` with their orientation index and preferred orientation."""
        out: dict[str, np.ndarray] = {}
        edges = np.linspace(0.0, 1.0, bins + 1)
        out["weight_bin_edges"] = edges
        weights = [w.detach().double().cpu() for w in self.weights]
        for i, w in enumerate(weights):
            p = f"conv{i + 1}_"
            flat = w.flatten().numpy()
            out[p + "w_mean"] = np.array(flat.mean())
            out[p + "w_std"] = np.array(flat.std())
            out[p + "w_hist"] = np.histogram(flat, edges)[0]
            out[p + "at_bounds"] = np.array(((flat < 0.01) | (flat > 0.99)).mean())
            out[p + "C"] = np.array(convergence(w))
            prev = self._last_weights[i] if self._last_weights else w
            out[p + "dw_mean_abs"] = np.array(float((w - prev).abs().mean()))
            out[p + "dw_max_abs"] = np.array(float((w - prev).abs().max()))
            new_wins = self.wins[i] - self._last_wins[i]
            out[p + "wins"] = new_wins.numpy()
            out[p + "winners"] = np.array(int((new_wins > 0).sum()))
            neuron = self.net.backbone.blocks[i].neuron
            out[p + "threshold"] = np.array(float(neuron.threshold))
            if neuron.offset is not None:  # homeostatic per-feature offsets
                out[p + "threshold_offset"] = neuron.offset.detach().cpu().numpy().copy()
        self._last_weights = weights
        self._last_wins = [w.clone() for w in self.wins]
        if self._last_images is not None:
            was = self.net.training
            ios = self.all_io(self._last_images.to(self.weights[0].device))
            self.net.train(was)
            for i, io in enumerate(ios):
                p = f"conv{i + 1}_"
                t = io.t_post.cpu()
                fired = t < self.time_steps
                out[p + "rate"] = np.array(float(fired.float().mean()))
                out[p + "spike_time_hist"] = torch.bincount(
                    t.flatten(), minlength=self.time_steps + 1
                ).numpy()
                out[p + "silent"] = np.array(float((fired.sum((0, 2, 3)) == 0).float().mean()))
        rf = effective_rf(self.weights[0])
        index, preferred = orientation_tuning(self.weights[0])
        out["conv1_rf"] = rf.numpy()
        out["conv1_orientation_index"] = index
        out["conv1_preferred_orientation"] = preferred
        return out

    def usage(self, layer: int) -> dict[str, float]:
        """How the competition spread over features: share of features that never won, and the
        most-used feature's share of all wins."""
        wins = self.wins[layer].double()
        total = max(float(wins.sum()), 1.0)
        return {
            "never_won": float((wins == 0).double().mean()),
            "max_share": float(wins.max()) / total,
            "events": total,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "seen": list(self.seen),
            "images": self.images,
            "wins": [w.clone() for w in self.wins],
            "offsets": [
                None if b.neuron.offset is None else b.neuron.offset.detach().cpu().clone()
                for b in self.net.backbone.blocks
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.layer, self.seen, self.images = state["layer"], list(state["seen"]), state["images"]
        self.wins = [w.clone() for w in state["wins"]]
        self._last_wins = [w.clone() for w in self.wins]
        for b, off in zip(self.net.backbone.blocks, state.get("offsets", [])):
            if off is not None and b.neuron.offset is not None:
                b.neuron.offset.copy_(off)

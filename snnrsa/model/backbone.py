"""The shared conv backbone of every rule: conv blocks (conv, BatchNorm, neuron, 2x2 max-pool),
fully connected layers, and a linear head, run over T time steps.

Convolutions and linear maps are folded over time (one call on ``T * B`` frames); only the neuron
dynamics step through time, so a feed-forward network costs its convolutions plus the neuron loop.
On CPU a block's fast LIF neuron and its 2x2 max-pool run as one compiled kernel
(``neurons.pooled_spikes``; same spikes and gradients as neuron then pool), which brings a spiking
BP step below the cost of its convolutions run T times (``tools/bench_backbone.py``).
With ``neuron=rate`` and T = 1 this is exactly a plain PyTorch CNN.

``backbone.time_checkpoint = k > 0`` bounds BPTT activation memory in training: each conv block
runs k time steps at a time under activation checkpointing and is recomputed chunk by chunk in
backward, keeping only its input, its output and one neuron state per chunk. BatchNorm still
normalises with statistics over all T * B frames (``_ConvStats``), so the step equals full BPTT
to float rounding (``tests/model/test_memory_option.py``); cost and memory: ``tools/bench_memory.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from snnrsa.neurons import make_neuron, pooled_spikes
from snnrsa.schema import BackboneConfig, NeuronConfig


def fold_time(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a per-frame layer to a ``[T, B, ...]`` sequence in one call."""
    y = layer(x.flatten(0, 1))
    return y.unflatten(0, x.shape[:2])


class _ConvStats(torch.autograd.Function):
    """Per-channel mean and biased variance of ``conv(x)`` over all frames and pixels (BatchNorm's
    training statistics), computed ``chunk`` time steps at a time: the conv output of the whole
    sequence never exists. Backward recomputes each chunk's conv and back-propagates
    ``dL/dy = g_mean / N + g_var * 2 (y - mean) / N`` through the conv module itself (so FA's
    feedback convs keep their own backward), again one chunk at a time."""

    @staticmethod
    def forward(ctx, x, chunk, conv, *params):
        stats = []
        with torch.no_grad():
            for xc in x.split(chunk):
                y = fold_time(conv, xc)
                var, mean = torch.var_mean(y, dim=(0, 1, 3, 4), unbiased=False)
                stats.append((y.numel() // y.shape[2], mean.double(), var.double()))
        n = sum(k for k, _, _ in stats)
        mean = sum(k * m for k, m, _ in stats) / n  # Chan et al.'s pairwise combination, float64
        var = sum(k * (v + (m - mean) ** 2) for k, m, v in stats) / n
        mean, var = mean.to(x.dtype), var.to(x.dtype)
        ctx.save_for_backward(x, mean)
        ctx.chunk, ctx.conv, ctx.n = chunk, conv, n
        return mean, var

    @staticmethod
    def backward(ctx, g_mean, g_var):
        x, mean = ctx.saved_tensors
        conv, n = ctx.conv, ctx.n
        params = [p for p in conv.parameters() if p.requires_grad]
        b = 2.0 * g_var / n
        a = (g_mean / n - b * mean).view(1, -1, 1, 1)
        b = b.view(1, -1, 1, 1)
        need_x = ctx.needs_input_grad[0]
        gx, gp = [], [torch.zeros_like(p) for p in params]
        for xc in x.split(ctx.chunk):
            with torch.enable_grad():
                xi = xc.detach().flatten(0, 1).requires_grad_(need_x)
                y = conv(xi)
                inputs = [xi, *params] if need_x else params
                grads = torch.autograd.grad(y, inputs, torch.addcmul(a, y.detach(), b),
                                            allow_unused=True)
            if need_x:
                gx.append(grads[0].unflatten(0, xc.shape[:2]))
                grads = grads[1:]
            for acc, g in zip(gp, grads):
                if g is not None:
                    acc.add_(g)
        all_params = list(conv.parameters())
        it = iter(gp)
        out_p = [next(it) if p.requires_grad else None for p in all_params]
        return (torch.cat(gx) if need_x else None), None, None, *out_p


class ConvBlock(nn.Module):
    """conv (no bias) -> BatchNorm -> neuron -> 2x2 max-pool."""

    def __init__(self, c_in: int, c_out: int, kernel: int, batch_norm: bool, neuron: NeuronConfig,
                 padding: int | None = None, pool_padding: int = 0):
        super().__init__()
        pad = kernel // 2 if padding is None else padding
        self.conv = nn.Conv2d(c_in, c_out, kernel, padding=pad, bias=False)
        self.bn = nn.BatchNorm2d(c_out) if batch_norm else nn.Identity()
        self.neuron = make_neuron(neuron)
        if batch_norm and self.neuron.spiking and neuron.bn_alpha is not None:
            # tdBN (Zheng et al. 2021): the current starts normalised to alpha * threshold
            # (tools/diagnose_spiking_bp.py)
            nn.init.constant_(self.bn.weight, neuron.bn_alpha * neuron.threshold)
        self.pool = nn.MaxPool2d(2, padding=pool_padding)
        self.fold_bn = False

    def _conv_bn(self, f: torch.Tensor) -> torch.Tensor:
        bn = self.bn
        if (self.fold_bn and not self.training and not torch.is_grad_enabled()
                and type(bn) is nn.BatchNorm2d and not bn.training and bn.track_running_stats):
            # eval-only: BatchNorm folded into the conv (one pass less over the largest maps).
            # Only a plain BatchNorm2d in eval mode: bn_eval_mode=train (batch statistics at
            # evaluation) and subclasses with their own forward (stdp_published's ReLU-then-BN)
            # take the ordinary path.
            scale = bn.running_var.add(bn.eps).rsqrt()
            if bn.affine:
                scale = scale * bn.weight
            bias = -bn.running_mean * scale
            if bn.affine:
                bias = bias + bn.bias
            w = self.conv.weight * scale.view(-1, 1, 1, 1)
            return F.conv2d(f, w, bias, self.conv.stride, self.conv.padding)
        return bn(self.conv(f))

    def current(self, x: torch.Tensor, static: bool) -> torch.Tensor:
        """Input current ``[T, B, C, H, W]``; a static input is convolved once and repeated."""
        if static:
            cur = self._conv_bn(x[0])
            return cur.unsqueeze(0).expand(x.shape[0], *cur.shape)
        return fold_time(self._conv_bn, x)

    def forward(self, x: torch.Tensor, static: bool = False) -> torch.Tensor:
        cur = self.current(x, static)
        if _is_2x2_max_pool(self.pool):
            out = pooled_spikes(self.neuron, cur)  # fast LIF + pool in one CPU kernel
            if out is not None:
                return out
        return fold_time(self.pool, self.neuron(cur))

    def _bn_affine(self, x: torch.Tensor, chunk: int):
        """BatchNorm as ``y * scale + shift`` (per channel, differentiable), with exactly
        ``nn.BatchNorm2d``'s statistics and running-statistics update; None for no BatchNorm."""
        bn = self.bn
        if not isinstance(bn, nn.BatchNorm2d):
            return None
        use_batch = bn.training or bn.running_mean is None
        if use_batch:
            mean, var = _ConvStats.apply(x, chunk, self.conv, *self.conv.parameters())
            if bn.training and bn.track_running_stats:
                with torch.no_grad():
                    bn.num_batches_tracked.add_(1)
                    f = (1.0 / float(bn.num_batches_tracked) if bn.momentum is None
                         else bn.momentum)
                    n = x.shape[0] * x.shape[1] * x.shape[3] * x.shape[4]
                    bn.running_mean.mul_(1 - f).add_(mean.detach(), alpha=f)
                    bn.running_var.mul_(1 - f).add_(var.detach(), alpha=f * n / max(n - 1, 1))
        else:
            mean, var = bn.running_mean, bn.running_var
        scale = (var + bn.eps).rsqrt()
        if bn.affine:
            scale = scale * bn.weight
        shift = -mean * scale
        if bn.affine:
            shift = shift + bn.bias
        return scale.view(-1, 1, 1), shift.view(-1, 1, 1)

    def forward_chunked(self, x: torch.Tensor, static: bool, chunk: int) -> torch.Tensor:
        """``forward`` with activation memory bounded by ``chunk`` time steps (training with
        ``backbone.time_checkpoint``): conv, BatchNorm, neuron and pool run ``chunk`` steps at a
        time under non-reentrant checkpointing, each chunk from the last one's neuron state, and
        are recomputed chunk by chunk in backward. BatchNorm keeps its statistics over the whole
        sequence (``_ConvStats``), so outputs, gradients and running statistics equal ``forward``
        to float rounding. Kept for backward: the block's input and each chunk's neuron state.
        A block whose BatchNorm or neuron a rule replaced by its own module (e.g. stdp_published's
        ReLU-then-BN) runs unchunked: ``forward``."""
        if not (type(self.bn) is nn.BatchNorm2d or isinstance(self.bn, nn.Identity)) or not hasattr(
            self.neuron, "run"
        ):
            return self.forward(x, static)
        if static:
            cur0 = self._conv_bn(x[0])  # one frame, T-independent memory

            def piece(n: int, state):
                cur = cur0.unsqueeze(0).expand(n, *cur0.shape)
                spikes, state = self.neuron.run(cur, state)
                return fold_time(self.pool, spikes), state

            args = [(n,) for n in _sizes(x.shape[0], chunk)]
        else:
            affine = self._bn_affine(x, chunk)

            def piece(xc: torch.Tensor, state):
                cur = fold_time(self.conv, xc)
                if affine is not None:
                    cur = torch.addcmul(affine[1], cur, affine[0])
                spikes, state = self.neuron.run(cur, state)
                return fold_time(self.pool, spikes), state

            args = [(xc,) for xc in x.split(chunk)]
        outs, state = [], None
        for a in args:
            out, state = torch.utils.checkpoint.checkpoint(
                piece, *a, state, use_reentrant=False, preserve_rng_state=False)
            outs.append(out)
        return torch.cat(outs)


def _is_2x2_max_pool(pool: nn.Module) -> bool:
    """Exactly ``nn.MaxPool2d(2)`` (a rule's own pool module, e.g. STDP's, is left alone)."""
    return (type(pool) is nn.MaxPool2d and pool.kernel_size in (2, (2, 2))
            and pool.stride in (2, (2, 2)) and pool.padding in (0, (0, 0))
            and pool.dilation in (1, (1, 1)) and not pool.ceil_mode and not pool.return_indices)


def _sizes(total: int, chunk: int) -> list[int]:
    return [min(chunk, total - i) for i in range(0, total, chunk)]


class FCLayer(nn.Module):
    """linear (-> tdBN for spiking neurons with ``neuron.bn_alpha``) -> neuron (-> dropout)."""

    def __init__(self, n_in: int, n_out: int, neuron: NeuronConfig, dropout: float):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.neuron = make_neuron(neuron)
        self.bn = nn.Identity()
        if self.neuron.spiking and neuron.bn_alpha is not None:
            # tdBN here too: without it FC1's current (small against the threshold, from sparse,
            # late conv spikes) drifts below zero in epoch 1 and FC1 falls mostly silent, so the
            # head sees almost nothing (tools/diagnose_spiking_bp.py prints the current in
            # threshold units and the silent share per layer)
            self.bn = nn.BatchNorm1d(n_out)
            nn.init.constant_(self.bn.weight, neuron.bn_alpha * neuron.threshold)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def current(self, f: torch.Tensor) -> torch.Tensor:
        """The neuron's input current for ``T * B`` frames (BatchNorm over all of them)."""
        return self.bn(self.linear(f))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.neuron(fold_time(self.current, x)))


def block_kernel(cfg: BackboneConfig, i: int) -> int:
    """Kernel size of conv block ``i``: ``kernel_sizes`` (last entry repeats) or ``kernel_size``."""
    return cfg.kernel_sizes[min(i, len(cfg.kernel_sizes) - 1)] if cfg.kernel_sizes else cfg.kernel_size


def block_padding(cfg: BackboneConfig, i: int) -> int | None:
    """Conv padding of block ``i``; None: kernel // 2."""
    return cfg.padding[min(i, len(cfg.padding) - 1)] if cfg.padding else None


@dataclass(frozen=True)
class BlockSpec:
    """A rule's own conv-block parts (STDP's first-spike neurons and pools, its DoG input code,
    the study's ReLU-then-BN), which the network builds in place of the defaults; ``rule`` names
    the rule it was made for. Each factory gets the block index and the part it replaces (or,
    for ``bn`` and ``neuron``, the block's conv). The backbone builds them after its own layers,
    block by block and in the order conv, bn, neuron, pool, so a rule's weight draws follow the
    backbone's and a seed keeps the weights it has always given."""

    rule: str
    encoder: Callable[[nn.Module], nn.Module] | None = None
    conv: Callable[[int, nn.Conv2d], nn.Conv2d] | None = None
    bn: Callable[[int, nn.Conv2d], nn.Module] | None = None
    neuron: Callable[[int, nn.Conv2d], nn.Module] | None = None
    pool: Callable[[int, nn.Module], nn.Module] | None = None


class Backbone(nn.Module):
    """Conv blocks, an adaptive pool to ``pool_to`` (for evaluation above the training size),
    fully connected layers and the linear head; returns every layer's output sequence."""

    def __init__(self, cfg: BackboneConfig, neuron: NeuronConfig, n_classes: int,
                 spec: BlockSpec | None = None):
        super().__init__()
        chans = [cfg.in_channels, *cfg.channels]
        # backbone.init=study_fa / study_stdp: the study's draw order from the global generator
        # (FA_CNN, STDP_CNN), conv weights only, so a seed gives the study's weights exactly
        self.study_feedback: dict[str, torch.Tensor] = {}
        blocks = []
        for i in range(len(cfg.channels)):
            args = (chans[i], chans[i + 1], block_kernel(cfg, i), cfg.batch_norm, neuron,
                    block_padding(cfg, i), cfg.pool_padding)
            if cfg.init == "study_fa":  # FA_CNN draws W itself: no default init draw
                with torch.random.fork_rng(devices=[]):
                    block = ConvBlock(*args)
            else:
                block = ConvBlock(*args)
            if cfg.init in ("study_fa", "study_stdp"):
                nn.init.kaiming_normal_(block.conv.weight, nonlinearity="relu")
            if cfg.init == "study_fa":  # FA_CNN's B: randn, then redrawn by xavier_normal
                fixed = torch.randn(block.conv.weight.shape)
                self.study_feedback[f"conv{i + 1}"] = nn.init.xavier_normal_(fixed)
            blocks.append(block)
        self.blocks = nn.ModuleList(blocks)
        self.pool_to = cfg.pool_to
        units = [cfg.channels[-1] * cfg.pool_to**2, *cfg.fc_units]
        self.fcs = nn.ModuleList(
            FCLayer(units[i], units[i + 1], neuron, cfg.dropout) for i in range(len(cfg.fc_units))
        )
        self.head = nn.Linear(units[-1], n_classes)
        # channels-last frames (mkldnn's faster conv and BatchNorm layout on CPU; see
        # _channels_last for where) and, in no-grad evaluation, BatchNorm folded into the convs;
        # features change by float rounding only (tools/bench_eval.py prints the difference)
        self.channels_last = True
        self.fold_bn = True
        # training-memory bound (backbone.time_checkpoint): conv blocks recomputed in backward,
        # that many time steps at a time; 0 = full BPTT (every activation kept)
        if cfg.time_checkpoint < 0:
            raise ValueError(f"backbone.time_checkpoint={cfg.time_checkpoint} must be >= 0 "
                             "(0 = off, k = recompute conv blocks k time steps at a time)")
        self.time_checkpoint = int(cfg.time_checkpoint)
        if cfg.init == "kaiming_normal":  # every conv and linear layer (not the study's order)
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
        if spec is not None:
            self._build_rule_parts(spec)

    def _build_rule_parts(self, spec: BlockSpec) -> None:
        """Each block's parts from ``spec`` (see ``BlockSpec`` for the order)."""
        for i, block in enumerate(self.blocks):
            if spec.conv is not None:
                block.conv = spec.conv(i, block.conv)
            if spec.bn is not None:
                block.bn = spec.bn(i, block.conv)
            if spec.neuron is not None:
                block.neuron = spec.neuron(i, block.conv)
            if spec.pool is not None:
                block.pool = spec.pool(i, block.pool)

    @property
    def fold_bn(self) -> bool:
        """Fold BatchNorm into the convs in no-grad evaluation (on by default; features equal to
        float rounding, see tools/bench_eval.py)."""
        return all(b.fold_bn for b in self.blocks)

    @fold_bn.setter
    def fold_bn(self, value: bool) -> None:
        for b in self.blocks:
            b.fold_bn = bool(value)

    def _channels_last(self, x: torch.Tensor) -> bool:
        """Whether frames go channels-last: always in no-grad evaluation, and in training for
        snnrsa's LIF neurons on CPU (their fused LIF + pool kernels read that layout as it lies;
        the library loop gets the same frames, so the two stay comparable bit for bit). A spiking
        BP step then spends less in its convolutions and BatchNorm (``tools/bench_backbone.py``);
        rate and rule-specific (STDP) training keep their layout and numbers."""
        if not self.channels_last:
            return False
        if not self.training and not torch.is_grad_enabled():
            return True
        neuron = self.blocks[0].neuron
        return (x.device.type == "cpu" and getattr(neuron, "spiking", False)
                and getattr(neuron, "impl", None) in ("fast", "library"))

    def forward(
        self, x: torch.Tensor, static: bool = False
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Head currents ``[T, B, K]`` and each named layer's output sequence ``[T, B, ...]``."""
        outputs: dict[str, torch.Tensor] = {}
        if x.dim() == 5 and self._channels_last(x):
            cl = torch.channels_last
            if static:
                x = x[0].contiguous(memory_format=cl).unsqueeze(0).expand(x.shape)
            else:
                x = x.flatten(0, 1).contiguous(memory_format=cl).unflatten(0, x.shape[:2])
        for i, block in enumerate(self.blocks):
            st = static and i == 0
            if self.time_checkpoint and self.training and torch.is_grad_enabled():
                x = block.forward_chunked(x, st, self.time_checkpoint)
            else:
                x = block(x, static=st)
            outputs[f"conv{i + 1}"] = x
        if x.shape[-1] != self.pool_to or x.shape[-2] != self.pool_to:
            x = fold_time(lambda f: F.adaptive_avg_pool2d(f, self.pool_to), x)
        x = x.flatten(2)
        for i, fc in enumerate(self.fcs):
            x = fc(x)
            outputs[f"fc{i + 1}"] = x
        return fold_time(self.head, x), outputs

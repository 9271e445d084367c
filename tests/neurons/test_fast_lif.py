"""The fused LIF path (neuron.impl=fast) against each backend's idiomatic library loop:
identical spikes, gradients equal to float tolerance, and every tensor following .to()."""

from __future__ import annotations

import pytest
import torch

from snnrsa.config import NeuronConfig
from snnrsa.model.network import Network
from snnrsa.neurons import NorseLIF, SnntorchLIF, _cpu, make_neuron, pooled_spikes

from conftest import typed_cfg

CASES = [
    ("snntorch_lif", "zero", "fast_sigmoid", 1.0),
    ("snntorch_lif", "zero", "fast_sigmoid", 25.0),
    ("snntorch_lif", "zero", "atan", 2.0),
    ("snntorch_lif", "subtract", "fast_sigmoid", 1.0),
    ("snntorch_lif", "subtract", "atan", 2.0),
    ("norse_lif", "zero", "fast_sigmoid", 1.0),
]


def _neuron(name, reset, sur, slope, impl, beta=0.9):
    cfg = NeuronConfig(name=name, time_steps=8, beta=beta, threshold=1.0, reset=reset,
                       surrogate=sur, surrogate_slope=slope)
    return make_neuron(cfg, impl)


def _currents(T: int, shape: tuple, static: bool, scale: float, shift: float):
    """Input currents ``[T, *shape]`` and the leaf to differentiate: a static (analog) input is one
    current expanded over time (stride 0), as ``ConvBlock.current`` gives it."""
    if static:
        base = (torch.randn(shape) * scale + shift).requires_grad_()
        return base.unsqueeze(0).expand(T, *shape), base
    leaf = (torch.randn(T, *shape) * scale + shift).requires_grad_()
    return leaf, leaf


@pytest.mark.parametrize("name,reset,sur,slope", CASES)
@pytest.mark.parametrize("static", [False, True])
def test_fast_neuron_matches_library_loop(name, reset, sur, slope, static) -> None:
    torch.manual_seed(0)
    T, shape = 12, (3, 6, 5, 5)
    x, leaf = _currents(T, shape, static, 0.6 if static else 0.8, 0.3)
    w = torch.randn(T, *shape)
    got = {}
    for impl in ("library", "fast"):
        out = _neuron(name, reset, sur, slope, impl)(x)
        (g,) = torch.autograd.grad((out * w).sum(), leaf)
        got[impl] = (out, g)
    (s_lib, g_lib), (s_fast, g_fast) = got["library"], got["fast"]
    assert torch.equal(s_lib, s_fast)
    assert 0.05 < float(s_lib.detach().mean()) < 0.95, "too few/many spikes for a meaningful comparison"
    torch.testing.assert_close(g_fast, g_lib, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the no-grad path (two rolling buffers) gives the same spikes
        assert torch.equal(_neuron(name, reset, sur, slope, "fast")(x), s_lib)


def test_norse_and_snntorch_reset_gradients_differ_as_documented() -> None:
    """Same spikes, different surrogate gradients (snntorch detaches the reset, norse does not):
    the fast path must reproduce each backend, not one shared gradient."""
    torch.manual_seed(1)
    x = (torch.randn(10, 4, 50) * 0.8 + 0.4).requires_grad_()
    grads, spikes = {}, {}
    for name in ("snntorch_lif", "norse_lif"):
        out = _neuron(name, "zero", "fast_sigmoid", 1.0, "fast")(x)
        spikes[name] = out
        (grads[name],) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(spikes["snntorch_lif"], spikes["norse_lif"])
    assert not torch.allclose(grads["snntorch_lif"], grads["norse_lif"])


@pytest.mark.parametrize("backend", ["snntorch_lif", "norse_lif"])
@pytest.mark.parametrize("encoding", ["analog", "poisson", "latency"])
def test_fast_network_matches_library_network(backend: str, encoding: str) -> None:
    """Whole network in training mode: every layer's spikes equal, every parameter's gradient close."""
    cfg = typed_cfg([f"neuron={backend}", f"encoding={encoding}", "neuron.time_steps=6"])
    results = {}
    for impl in ("library", "fast"):
        torch.manual_seed(3)
        net = Network(cfg, 10)
        for layer in [*net.backbone.blocks, *net.backbone.fcs]:
            layer.neuron.impl = impl
        net.train()
        torch.manual_seed(4)
        x = torch.rand(4, 3, 32, 32)
        y = torch.tensor([0, 1, 2, 3])
        scores, outs = net.run(x)
        torch.nn.functional.cross_entropy(scores, y).backward()
        results[impl] = (outs, {n: p.grad.clone() for n, p in net.named_parameters()})
    (o_lib, g_lib), (o_fast, g_fast) = results["library"], results["fast"]
    for layer in o_lib:
        assert torch.equal(o_lib[layer], o_fast[layer]), layer
    assert sum(float(o.detach().sum()) for o in o_lib.values()) > 0
    for n in g_lib:
        torch.testing.assert_close(g_fast[n], g_lib[n], rtol=1e-4, atol=1e-6, msg=n)
    assert any(float(g.abs().sum()) > 0 for g in g_lib.values())


def test_default_impl_is_fast_and_library_is_selectable() -> None:
    cfg = NeuronConfig(name="snntorch_lif", time_steps=4)
    assert cfg.impl == "fast"
    assert isinstance(make_neuron(cfg), SnntorchLIF) and make_neuron(cfg).impl == "fast"
    assert make_neuron(cfg, "library").impl == "library"
    assert isinstance(make_neuron(NeuronConfig(name="norse_lif"), "library"), NorseLIF)
    with pytest.raises(ValueError, match="neuron.impl"):
        make_neuron(cfg, "compiled")


@pytest.mark.parametrize("backend", ["snntorch_lif", "norse_lif"])
def test_every_tensor_follows_the_model(backend: str) -> None:
    """dtype and device changes reach every parameter and buffer (neurons and encoder included),
    and the fast path creates nothing on a fixed device: it runs forward and backward on meta."""
    cfg = typed_cfg([f"neuron={backend}", "neuron.time_steps=4"])
    torch.manual_seed(0)
    net64 = Network(cfg, 10).to(torch.float64)
    tensors = [*net64.parameters(), *net64.buffers()]
    assert {t.dtype for t in tensors if t.is_floating_point()} == {torch.float64}
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    net64.train()
    out = net64(x)
    assert out.dtype == torch.float64
    out.sum().backward()
    assert all(p.grad.dtype == torch.float64 for p in net64.parameters() if p.grad is not None)

    meta = Network(cfg, 10).to("meta")
    assert all(t.device.type == "meta" for t in [*meta.parameters(), *meta.buffers()])
    meta.train()
    out = meta(torch.rand(2, 3, 32, 32, device="meta"))
    assert out.device.type == "meta"
    out.sum().backward()
    assert all(p.grad.device.type == "meta" for p in meta.parameters() if p.grad is not None)


def test_float64_fast_matches_float64_library() -> None:
    torch.manual_seed(2)
    x = (torch.randn(8, 3, 40, dtype=torch.float64) * 0.8 + 0.3).requires_grad_()
    outs = {}
    for impl in ("library", "fast"):
        n = _neuron("snntorch_lif", "zero", "fast_sigmoid", 1.0, impl).to(torch.float64)
        out = n(x)
        outs[impl] = (out, torch.autograd.grad(out.sum(), x)[0])
    assert torch.equal(outs["library"][0], outs["fast"][0])
    torch.testing.assert_close(outs["library"][1], outs["fast"][1])


@pytest.mark.parametrize("name,reset,sur,slope", CASES)
@pytest.mark.parametrize("impl", ["fast", "library"])
def test_chunked_run_from_state_equals_one_run(name, reset, sur, slope, impl) -> None:
    """``run(current, state)`` over time chunks, each from the previous chunk's state (what
    backbone.time_checkpoint does): identical spikes, gradients equal to float tolerance."""
    torch.manual_seed(0)
    n = _neuron(name, reset, sur, slope, impl)
    x = (torch.randn(12, 3, 6, 5, 5) * 0.8 + 0.3).requires_grad_()
    w = torch.randn(12, 3, 6, 5, 5)
    out = n(x)
    (g,) = torch.autograd.grad((out * w).sum(), x)
    pieces, state = [], None
    for xc in x.split(5):
        o, state = n.run(xc, state)
        pieces.append(o)
    chunked = torch.cat(pieces)
    (g2,) = torch.autograd.grad((chunked * w).sum(), x)
    assert torch.equal(out, chunked)
    assert 0.05 < float(out.detach().mean()) < 0.95
    torch.testing.assert_close(g2, g, rtol=1e-5, atol=1e-6)


def _tensor_path(monkeypatch) -> None:
    """Send the fused LIF down its tensor-op path (the one GPUs take) instead of the CPU kernels."""
    monkeypatch.setattr(_cpu, "supported", lambda x: False)


@pytest.mark.parametrize("name,reset,sur,slope", CASES)
@pytest.mark.parametrize("static", [False, True])
def test_cpu_kernels_equal_tensor_path(name, reset, sur, slope, static, monkeypatch) -> None:
    """The compiled CPU kernels against the tensor-op path, on enough units for three threads and
    a ragged last block, run in two chunks (carried membrane): spikes and carried state bit-equal,
    gradients w.r.t. the input and the carried state to float tolerance."""
    torch.manual_seed(5)
    T, shape = 9, (5, 7, 24, 23)  # 19,320 units: 3 thread ranges, last block partial
    x, leaf = _currents(T, shape, static, 0.5 if static else 0.8, 0.35 if static else 0.3)
    w, w_last = torch.randn(T, *shape), torch.randn(shape)
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        runs = {}
        for path in ("compiled", "tensor"):
            if path == "tensor":
                _tensor_path(monkeypatch)
            n = _neuron(name, reset, sur, slope, "fast")
            a, state = n.run(x[:4])
            b, last = n.run(x[4:], state)
            out = torch.cat([a, b])
            loss = (out * w).sum() + (last * w_last).sum()
            runs[path] = (out, last, state, *torch.autograd.grad(loss, [leaf, state]))
    finally:
        torch.set_num_threads(threads)
    (o1, l1, s1, g1, gs1), (o2, l2, s2, g2, gs2) = runs["compiled"], runs["tensor"]
    assert torch.equal(o1, o2) and torch.equal(l1, l2) and torch.equal(s1, s2)
    assert 0.05 < float(o1.detach().mean()) < 0.95
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-5)  # as against the library loops
    torch.testing.assert_close(gs1, gs2, rtol=1e-5, atol=1e-5)
    assert float(gs1.abs().sum()) > 0


def test_cpu_kernels_keep_channels_last_and_float64(monkeypatch) -> None:
    """No-grad evaluation on channels-last frames: spikes come back in the same memory layout,
    equal to the row-major run; float64 runs in float64 (equal to the tensor path)."""
    torch.manual_seed(6)
    n = _neuron("snntorch_lif", "zero", "fast_sigmoid", 1.0, "fast")
    x = torch.randn(6, 4, 8, 10, 10) * 0.8 + 0.3
    cl = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (6, 4))
    with torch.no_grad():
        out_cl, out = n(cl), n(x)
    assert out_cl.stride() == cl.stride() != x.stride()
    assert torch.equal(out_cl, out)
    x64 = x.double()
    with torch.no_grad():
        s64 = n(x64)
        _tensor_path(monkeypatch)
        ref64 = n(x64)
    assert s64.dtype == torch.float64 and torch.equal(s64, ref64)


@pytest.mark.parametrize("name,reset,sur,slope", CASES)
@pytest.mark.parametrize("static", [False, True])
def test_fused_lif_pool_equals_lif_then_max_pool(name, reset, sur, slope, static) -> None:
    """The conv block's fused CPU kernel (LIF + 2x2 max-pool in one node) against the neuron
    followed by nn.MaxPool2d(2): identical pooled spikes; gradients to float tolerance, which
    needs each window's gradient routed to the unit PyTorch's pool picks (first spiking unit,
    or the window's first unit when none spiked: both occur here). Three threads."""
    torch.manual_seed(7)
    T, shape = 7, (4, 6, 20, 22)  # 2,640 window rows: three thread ranges
    x, leaf = _currents(T, shape, static, 0.5 if static else 0.8, 0.3 if static else 0.2)
    w = torch.randn(T, shape[0], shape[1], shape[2] // 2, shape[3] // 2)
    n = _neuron(name, reset, sur, slope, "fast")
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        fused = pooled_spikes(n, x)
        ref = torch.nn.functional.max_pool2d(n(x).flatten(0, 1), 2).unflatten(0, (T, shape[0]))
        (g_fused,) = torch.autograd.grad((fused * w).sum(), leaf)
        (g_ref,) = torch.autograd.grad((ref * w).sum(), leaf)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(fused, ref)
    assert 0.1 < ref.mean().item() < 0.9 and float((ref == 0).float().mean()) > 0.05
    torch.testing.assert_close(g_fused, g_ref, rtol=1e-5, atol=1e-5)


def test_fused_lif_pool_channels_last_and_fallbacks() -> None:
    """No-grad channels-last frames stay channels-last and equal the NCHW result; odd sizes and
    the library implementation are not fused (None: the block runs neuron, then pool)."""
    torch.manual_seed(8)
    n = _neuron("norse_lif", "zero", "fast_sigmoid", 1.0, "fast")
    x = torch.randn(5, 3, 8, 12, 12) * 0.8 + 0.3
    cl = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (5, 3))
    with torch.no_grad():
        a, b = pooled_spikes(n, x), pooled_spikes(n, cl)
        ref = torch.nn.functional.max_pool2d(n(x).flatten(0, 1), 2).unflatten(0, (5, 3))
    assert torch.equal(a, ref) and torch.equal(b, ref)
    assert b.flatten(0, 1).is_contiguous(memory_format=torch.channels_last)
    assert pooled_spikes(n, x[..., :11]) is None
    assert pooled_spikes(_neuron("norse_lif", "zero", "fast_sigmoid", 1.0, "library"), x) is None


def _idiomatic(net, seq: torch.Tensor, backend: str):
    """The libraries' tutorial loop: one time step through the whole network at a time, with
    fresh snntorch ``Leaky`` / norse ``LIFBoxCell`` states per layer; returns the time-mean head
    output and each layer's output sequence."""
    from norse.torch import LIFBoxCell, LIFBoxParameters

    from snnrsa.neurons import NORSE_DT

    layers = [*net.blocks, *net.fcs]
    cells, state = [], [None] * len(layers)
    for layer in layers:
        n = layer.neuron
        if backend == "snntorch_lif":
            cells.append(n.lif)
        else:
            p = LIFBoxParameters(tau_mem_inv=n.tau_mem_inv, v_th=n.v_th,
                                 v_leak=torch.zeros_like(n.v_th),
                                 v_reset=torch.zeros_like(n.v_th), method="super")
            cells.append(LIFBoxCell(p=p, dt=NORSE_DT))
    outs, head = {}, 0.0
    for frame in seq:
        x = frame
        for i, layer in enumerate(layers):
            conv = i < len(net.blocks)
            cur = layer.bn(layer.conv(x)) if conv else layer.linear(x)
            if backend == "snntorch_lif":
                mem = torch.zeros_like(cur) if state[i] is None else state[i]
                x, state[i] = cells[i](cur, mem)
            else:
                x, state[i] = cells[i](cur * layer.neuron.input_scale, state[i])
            if conv:
                x = layer.pool(x)
            name = f"conv{i + 1}" if conv else f"fc{i + 1 - len(net.blocks)}"
            outs.setdefault(name, []).append(x)
            if i == len(net.blocks) - 1:
                x = x.flatten(1)
        head = head + net.head(x)
    return head / len(seq), {k: torch.stack(v) for k, v in outs.items()}


@pytest.mark.parametrize("backend", ["snntorch_lif", "norse_lif"])
@pytest.mark.parametrize("kernels", ["cpu", "tensor_ops"])
def test_fast_backbone_equals_the_idiomatic_per_step_loop(backend, kernels, monkeypatch) -> None:
    """The default path (time-folded convs; on CPU compiled kernels with LIF + pool fused, else
    the tensor-op path that GPUs run) against the libraries' own per-time-step loop over the
    whole network, on Poisson spike frames: every layer's spikes identical, every parameter's
    gradient equal to float tolerance. BatchNorm in eval mode (the loop normalises each step's
    batch on its own in training mode, the folded path all T*B frames: a different model)."""
    if kernels == "tensor_ops":
        _tensor_path(monkeypatch)
    from snnrsa.config import BackboneConfig
    from snnrsa.model.backbone import Backbone

    torch.manual_seed(9)
    net = Backbone(BackboneConfig(), NeuronConfig(name=backend, time_steps=6), 10)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # non-trivial statistics and affine maps
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.8, 1.6)
    net.eval()
    seq = torch.bernoulli(torch.rand(6, 5, 3, 32, 32))
    y = torch.tensor([0, 1, 2, 3, 4])
    grads, outs = {}, {}
    for path in ("fast", "idiomatic"):
        net.zero_grad()
        if path == "fast":
            head, o = net(seq)
            head = head.mean(0)
        else:
            head, o = _idiomatic(net, seq, backend)
        torch.nn.functional.cross_entropy(head, y).backward()
        outs[path] = o
        grads[path] = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    for name, spikes in outs["idiomatic"].items():
        assert torch.equal(outs["fast"][name], spikes), name
        assert 0 < spikes.mean().item() < 1, name
    assert grads["fast"].keys() == grads["idiomatic"].keys() and len(grads["fast"]) > 8
    for n, g in grads["idiomatic"].items():
        torch.testing.assert_close(grads["fast"][n], g, rtol=1e-4, atol=1e-6, msg=n)
    assert all(float(g.abs().sum()) > 0 for g in grads["idiomatic"].values())

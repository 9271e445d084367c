#!/usr/bin/env bash
# One prepared GPU check of issue 8 (speed), < 8 minutes on one H100/H200. Run from the repo root:
#     bash tools/gpu_check.sh            # writes logs to ${OUT:-/tmp/gpu_check}
# 1. fast LIF == library loop on CUDA (spikes identical, gradients close), both backends
# 2. tools/bench_backbone.py on cuda: BP step, batch 128, T = 8 and 16; fast vs idiomatic loops
#    (issue aim: fast >= 3x the idiomatic snntorch loop) and BPTT memory (CUDA peak) at T = 16, 32
# 3. tools/bench_eval.py on cuda: 720 images at 224 px, all read-out layers, vs plain PyTorch
# 4. tools/bench_rules.py on cuda: per-rule epoch times (synthetic data, 1 epoch)
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
nvidia-smi | tee "$OUT/nvidia-smi.txt"
python - <<'PY' 2>&1 | tee "$OUT/equivalence_cuda.txt"
import torch
from snnrsa.config import NeuronConfig
from snnrsa.neurons import make_neuron
assert torch.cuda.is_available(), "no CUDA device"
dev = torch.device("cuda")
for name, reset, sur, slope in [("snntorch_lif", "zero", "fast_sigmoid", 1.0),
                                ("snntorch_lif", "subtract", "atan", 2.0),
                                ("norse_lif", "zero", "fast_sigmoid", 1.0)]:
    cfg = NeuronConfig(name=name, time_steps=16, reset=reset, surrogate=sur, surrogate_slope=slope)
    torch.manual_seed(0)
    x = (torch.randn(16, 64, 32, 16, 16, device=dev) * 0.8 + 0.3).requires_grad_()
    w = torch.randn_like(x)
    res = {}
    for impl in ("library", "fast"):
        out = make_neuron(cfg, impl).to(dev)(x)
        res[impl] = (out.detach(), torch.autograd.grad((out * w).sum(), x)[0])
    same = torch.equal(res["library"][0], res["fast"][0])
    gerr = float((res["library"][1] - res["fast"][1]).abs().max())
    print(f"cuda {name} {reset} {sur}: spikes identical={same} max|dgrad|={gerr:.2e}")
PY
timeout 270 python tools/bench_backbone.py --device cuda --batch 128 --steps 8 16 --reps 5 \
    --mem-steps 16 32 2>&1 | tee "$OUT/bench_backbone_cuda.txt"
timeout 90 python tools/bench_eval.py --device cuda --images 720 --spiking-images 720 --reps 3 \
    2>&1 | tee "$OUT/bench_eval_cuda.txt"
timeout 90 python tools/bench_rules.py --device cuda --data synthetic --epochs 1 \
    2>&1 | tee "$OUT/bench_rules_cuda.txt"
echo "gpu_check done; logs in $OUT"

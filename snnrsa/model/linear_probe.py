"""Linear probe: multinomial logistic regression on frozen layer activity.

Unsupervised rules (STDP) learn no class read-out, so their features are judged by how linearly
decodable the classes are. The probe reads a layer's time-averaged activity, pooled to a small
``pool_to`` x ``pool_to`` grid (global pooling discards the "where" a linear read-out needs),
standardises it on the training images and fits L2-regularised logistic regression.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from snnrsa.model.network import Network


@dataclass
class ProbeResult:
    layer: str
    train_acc: float
    test_acc: float
    n_features: int


@torch.no_grad()
def frozen_features(
    net: Network,
    images: torch.Tensor,
    layers: str | list[str],
    pool_to: int = 2,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> np.ndarray | dict[str, np.ndarray]:
    """``[N, F]`` time-averaged activity of ``layers`` for uint8 or [0, 1] float images, conv maps
    adaptive-average-pooled to ``pool_to``; the network is put in evaluation mode. A list of
    layers gives a dict from one forward pass (probing every layer of a checkpoint costs one
    pass, not one per layer); a single name gives its array."""
    names = [layers] if isinstance(layers, str) else list(layers)
    net.eval()
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size]
        x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
        outs = net.run(x.to(device))[1]
        for name in names:
            act = outs[name].mean(0)
            if act.dim() == 4:
                act = F.adaptive_avg_pool2d(act, pool_to)
            chunks[name].append(act.flatten(1).double().cpu())
    feats = {name: torch.cat(v).numpy() for name, v in chunks.items()}
    return feats[layers] if isinstance(layers, str) else feats


def fit_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    c: float = 1.0,
    max_iter: int = 1000,
) -> tuple[float, float]:
    """Train and test accuracy of standardised L2 logistic regression (inverse strength ``c``)."""
    scaler = StandardScaler().fit(train_x)
    clf = LogisticRegression(C=c, max_iter=max_iter)
    clf.fit(scaler.transform(train_x), train_y)
    return (
        float(clf.score(scaler.transform(train_x), train_y)),
        float(clf.score(scaler.transform(test_x), test_y)),
    )


def linear_probes(
    net: Network,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    layers: list[str],
    pool_to: int = 2,
    c: float = 1.0,
    max_iter: int = 1000,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> list[ProbeResult]:
    """Probe accuracy of each of ``layers`` of ``net`` (weights untouched)."""
    tr = frozen_features(net, train_images, layers, pool_to, batch_size, device)
    te = frozen_features(net, test_images, layers, pool_to, batch_size, device)
    out = []
    for layer in layers:
        train_acc, test_acc = fit_probe(
            tr[layer], train_labels.numpy(), te[layer], test_labels.numpy(), c, max_iter
        )
        out.append(ProbeResult(layer, train_acc, test_acc, tr[layer].shape[1]))
    return out


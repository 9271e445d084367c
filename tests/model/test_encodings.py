"""Encodings: shapes, value ranges and spike statistics."""

from __future__ import annotations

import pytest
import torch

from snnrsa.config import EncodingConfig
from snnrsa.model.encodings import Encoder

MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


def enc(name: str, t: int = 8, **kw) -> Encoder:
    return Encoder(EncodingConfig(name=name, **kw), t, MEAN, STD)


def test_analog_is_normalised_image_at_every_step() -> None:
    x = torch.rand(3, 3, 8, 8)
    out = enc("analog", t=5, gain=2.0)(x)
    assert out.shape == (5, 3, 3, 8, 8)
    expected = 2.0 * (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    for frame in out:
        torch.testing.assert_close(frame, expected)


@pytest.mark.parametrize("p_max", [1.0, 0.3])
def test_poisson_rate_matches_intensity_times_pmax(p_max: float) -> None:
    torch.manual_seed(0)
    levels = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0])
    x = levels.repeat_interleave(80).view(400, 1, 1, 1).expand(400, 3, 10, 10).contiguous()
    out = enc("poisson", t=20, p_max=p_max)(x)
    assert out.shape == (20, 400, 3, 10, 10)
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    rate = out.mean((0, 2, 3, 4)).view(5, 80).mean(1)
    torch.testing.assert_close(rate, levels * p_max, atol=0.01, rtol=0)
    assert float(out[:, :80].sum()) == 0.0  # intensity 0 never fires


def test_poisson_frames_are_independent() -> None:
    torch.manual_seed(1)
    out = enc("poisson", t=50)(torch.full((1, 3, 16, 16), 0.5))
    a, b = out[:-1].flatten(), out[1:].flatten()
    corr = torch.corrcoef(torch.stack([a, b]))[0, 1]
    assert abs(float(corr)) < 0.05


def test_latency_one_spike_per_pixel_brighter_first() -> None:
    t = 10
    x = torch.tensor([1.0, 0.8, 0.5, 0.2, 0.05, 0.0]).view(1, 1, 1, 6).expand(1, 3, 1, 6)
    out = enc("latency", t=t, threshold=0.05)(x.contiguous())
    assert out.shape == (t, 1, 3, 1, 6)
    counts = out.sum(0)[0, 0, 0]
    assert counts.tolist() == [1, 1, 1, 1, 0, 0]  # at or below threshold: silent
    times = out[:, 0, 0, 0, :4].argmax(0)
    assert times[0] == 0 and times.tolist() == sorted(times.tolist())
    assert len(set(times.tolist())) == 4
    # spike time = round((1 - x) / (1 - threshold) * (T - 1))
    expected = torch.round((1 - x[0, 0, 0, :4]) / 0.95 * (t - 1))
    assert times.tolist() == expected.long().tolist()


def test_encoder_rejects_unbatched_input() -> None:
    with pytest.raises(ValueError, match="B, C, H, W"):
        enc("analog")(torch.rand(3, 8, 8))

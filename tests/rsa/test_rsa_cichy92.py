"""RSA engine on real fMRI: the 92-image set (Cichy et al. 2014), EVC and IT RDMs of 15 subjects.

Numbers to hold: the dataset README's checks. The pixel RDM numbers are reproduced by Pillow's
default resize filter for RGB images (bicubic); bilinear gives 0.181 / 0.148 instead.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import SHARED, needs_shared

DATA = SHARED / "cichy92_algonauts2019"
pytestmark = needs_shared(DATA / "target_fmri.mat")


@pytest.fixture(scope="module")
def rdms() -> dict[str, np.ndarray]:
    import h5py

    with h5py.File(DATA / "target_fmri.mat", "r") as f:
        return {roi: np.transpose(np.array(f[f"{roi}_RDMs"])) for roi in ("EVC", "IT")}


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    from PIL import Image

    return np.stack(
        [
            np.asarray(
                Image.open(DATA / "images" / f"image_{i:02d}.jpg")
                .convert("RGB")
                .resize((64, 64), Image.BICUBIC),
                dtype=np.float64,
            )
            for i in range(1, 93)
        ]
    )


@pytest.mark.parametrize("roi", ["EVC", "IT"])
def test_loso_ceiling_equals_rsatoolbox(rdms, roi):
    from rsatoolbox.inference import boot_noise_ceiling

    from snnrsa.rsa import loso_noise_ceiling, to_rsatoolbox

    subj = rdms[roi]
    assert subj.shape == (15, 92, 92)
    mine = loso_noise_ceiling(subj, "spearman")
    ref = boot_noise_ceiling(to_rsatoolbox(subj), method="spearman")
    np.testing.assert_allclose(mine, ref, atol=1e-10)
    readme = {"EVC": (0.242, 0.392), "IT": (0.453, 0.542)}[roi]
    np.testing.assert_allclose(np.round(mine, 3), readme)


def test_loso_agreement(rdms):
    from snnrsa.rsa import loso_noise_ceiling

    got = [round(loso_noise_ceiling(rdms[r], pooling="mean")[0], 3) for r in ("EVC", "IT")]
    assert got == [0.239, 0.449]


def test_pixel_rdm_scores(rdms, images):
    from snnrsa.rsa import pixel_rdm, score

    pix = pixel_rdm(images)
    per_subject = [round(float(score(pix, rdms[r])), 3) for r in ("EVC", "IT")]
    mean_rdm = [round(float(score(pix, rdms[r], convention="mean_rdm")), 3) for r in ("EVC", "IT")]
    assert per_subject == [0.180, 0.147]
    assert mean_rdm == [0.427, 0.268]

"""Representational similarity analysis: RDMs from activations, comparisons, ceilings, statistics.

Modules: `rdm` (streamed RDMs), `compare` (scores and conventions), `ceiling` (noise ceilings),
`bootstrap` (stimulus bootstrap), `stats` (sign-flip, permutation, effect size, FDR/Holm),
`partial` (partial RSA), `references` (image-based reference RDMs), `mapping` (layer -> ROI),
`convert` (rsatoolbox RDMs). Pandas-based `mapping` is not imported here; import it directly.
"""

from snnrsa.rsa.bootstrap import (
    bootstrap_compare,
    bootstrap_indices,
    bootstrap_noise_ceiling,
    bootstrap_p,
    bootstrap_score,
    percentile_ci,
)
from snnrsa.rsa.ceiling import (
    SplitHalfCeiling,
    loso_noise_ceiling,
    spearman_brown,
    split_half_ceiling,
    split_session_ceiling,
)
from snnrsa.rsa.compare import compare, score, spearman, upper_tri
from snnrsa.rsa.convert import from_rsatoolbox, to_rsatoolbox
from snnrsa.rsa.partial import partial_compare, partial_spearman
from snnrsa.rsa.rdm import (
    GramAccumulator,
    compute_rdm,
    correlation_rdm,
    cosine_rdm,
    crossnobis_rdm,
    euclidean_rdm,
    streamed_rdm,
)
from snnrsa.rsa.references import (
    gabor_energy_rdm,
    luminance_rdm,
    mean_rgb_rdm,
    pixel_rdm,
    reference_rdms,
)
from snnrsa.rsa.stats import (
    adjust_within_families,
    cohens_d_paired,
    fdr_bh,
    holm,
    permutation_test,
    sign_flip_test,
)

__all__ = [
    "GramAccumulator",
    "SplitHalfCeiling",
    "adjust_within_families",
    "bootstrap_compare",
    "bootstrap_indices",
    "bootstrap_noise_ceiling",
    "bootstrap_p",
    "bootstrap_score",
    "cohens_d_paired",
    "compare",
    "compute_rdm",
    "correlation_rdm",
    "cosine_rdm",
    "crossnobis_rdm",
    "euclidean_rdm",
    "fdr_bh",
    "from_rsatoolbox",
    "gabor_energy_rdm",
    "holm",
    "loso_noise_ceiling",
    "luminance_rdm",
    "mean_rgb_rdm",
    "partial_compare",
    "partial_spearman",
    "percentile_ci",
    "permutation_test",
    "pixel_rdm",
    "reference_rdms",
    "score",
    "sign_flip_test",
    "spearman",
    "spearman_brown",
    "split_half_ceiling",
    "split_session_ceiling",
    "streamed_rdm",
    "to_rsatoolbox",
    "upper_tri",
]

"""Ways to draw latent codes to decode, besides the prior N(0, I).

Uniform over the codes' box, or a Gaussian mixture fitted to them after training (the AE's fair
chance, Ghosh et al. 2020)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.mixture import GaussianMixture


def uniform_in_box(codes: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n codes uniform over the bounding box of `codes` (N, d): the fairest blind draw for an AE."""
    lo, hi = codes.min(0).values, codes.max(0).values
    return lo + (hi - lo) * torch.rand(n, codes.shape[1], generator=generator)


def fit_gmm(codes: torch.Tensor | np.ndarray, components: int = 10, seed: int = 0) -> GaussianMixture:
    """A Gaussian mixture with full covariances fitted by EM (scikit-learn) to (N, d) codes, in float64."""
    gmm = GaussianMixture(n_components=components, covariance_type="full", random_state=seed)
    return gmm.fit(np.asarray(codes, dtype=np.float64))


def sample_gmm(gmm: GaussianMixture, n: int, seed: int = 0) -> torch.Tensor:
    """n codes from the mixture, float32, in random order (scikit-learn returns them grouped by component)."""
    rng = np.random.default_rng(seed)
    gmm.random_state = int(rng.integers(2**31 - 1))
    z, _ = gmm.sample(n)
    return torch.from_numpy(z[rng.permutation(n)]).float()

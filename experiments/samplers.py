"""A Gaussian mixture fitted to a model's codes after training, and samples from it: the AE's fair
chance at generating (Ghosh et al. 2020); the uniform box draw is common.latents.uniform_in_box."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.mixture import GaussianMixture


def fit_gmm(codes: torch.Tensor | np.ndarray, components: int = 10, seed: int = 0) -> GaussianMixture:
    """A Gaussian mixture with full covariances fitted by EM (scikit-learn) to (N, d) codes, in float64.
    scikit-learn takes seeds below 2**32; a larger one (the flags allow up to 2**44 - 1) is mapped
    into that range by numpy's SeedSequence, and a smaller one is used as it is (the same mixtures
    as before)."""
    state = seed if seed < 2**32 else int(np.random.SeedSequence(seed).generate_state(1)[0])
    gmm = GaussianMixture(n_components=components, covariance_type="full", random_state=state)
    return gmm.fit(np.asarray(codes, dtype=np.float64))


def sample_gmm(gmm: GaussianMixture, n: int, seed: int = 0) -> torch.Tensor:
    """n codes from the mixture, float32, in random order (scikit-learn returns them grouped by component)."""
    rng = np.random.default_rng(seed)
    gmm.random_state = int(rng.integers(2**31 - 1))
    z, _ = gmm.sample(n)
    return torch.from_numpy(z[rng.permutation(n)]).float()

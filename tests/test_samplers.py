"""common/samplers.py: the box draw and the Gaussian mixture fitted after training."""

import numpy as np
import torch

from common.latents import uniform_in_box
from experiments.samplers import fit_gmm, sample_gmm


def test_gmm_recovers_a_known_mixture():
    rng = np.random.default_rng(0)
    means = np.array([[-6.0, 0.0], [0.0, 6.0], [6.0, -3.0]])
    weights = np.array([0.5, 0.3, 0.2])
    component = rng.choice(3, size=6000, p=weights)
    codes = means[component] + rng.normal(scale=[0.5, 1.0], size=(6000, 2))
    gmm = fit_gmm(codes, components=3, seed=0)
    order = np.argsort(gmm.means_[:, 0])  # match the fitted components to the true ones by their x
    assert np.allclose(gmm.means_[order], means, atol=0.1)
    assert np.allclose(gmm.weights_[order], weights, atol=0.02)
    assert np.allclose(gmm.covariances_[order][:, [0, 1], [0, 1]], [[0.25, 1.0]] * 3, atol=0.1)
    z = sample_gmm(gmm, 6000, seed=1)
    assert z.dtype == torch.float32 and z.shape == (6000, 2)
    shares = np.bincount(np.argmin(((z.numpy()[:, None] - means[None]) ** 2).sum(-1), 1), minlength=3) / 6000
    assert np.allclose(shares, weights, atol=0.03)
    assert not np.all(np.diff(np.argmin(((z.numpy()[:100, None] - means[None]) ** 2).sum(-1), 1)) >= 0)  # shuffled
    assert torch.equal(z, sample_gmm(gmm, 6000, seed=1))  # reproducible


def test_uniform_in_box_stays_in_the_box():
    codes = torch.tensor([[-1.0, 2.0], [3.0, 5.0], [0.0, 4.0]])
    z = uniform_in_box(codes, 1000, torch.Generator().manual_seed(0))
    assert (z >= torch.tensor([-1.0, 2.0])).all() and (z <= torch.tensor([3.0, 5.0])).all()
    assert z[:, 0].min() < -0.9 and z[:, 0].max() > 2.9


def test_every_seed_the_flags_allow_fits_a_mixture():
    """scikit-learn refuses seeds of 2**32 and more; --seed goes up to 2**44 - 1. A seed below 2**32
    is used as it is (the same mixture as scikit-learn's own), a larger one is mapped into range."""
    from sklearn.mixture import GaussianMixture

    from common.options import MAX_SEED

    codes = np.random.default_rng(0).normal(size=(200, 2))
    small = fit_gmm(codes, components=2, seed=2**32 - 1)
    reference = GaussianMixture(n_components=2, covariance_type="full", random_state=2**32 - 1).fit(codes)
    assert np.array_equal(small.means_, reference.means_)
    large = fit_gmm(codes, components=2, seed=MAX_SEED)
    assert np.isfinite(large.means_).all()
    assert np.array_equal(large.means_, fit_gmm(codes, components=2, seed=MAX_SEED).means_)  # reproducible

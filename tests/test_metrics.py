"""Metrics against answers worked out by hand or in closed form."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from experiments.metrics import (
    active_units,
    aggregate_kl,
    aggregate_log_density,
    class_entropy,
    confidence_stats,
    decoder_log_likelihood,
    frechet_distance,
    frechet_distance_from_moments,
    histogram_entropy,
    importance_weighted_bound,
    iwae_nll,
    kl_per_dimension,
    latent_geometry,
    neg_elbo,
    prior_radius,
    reconstruction_metrics,
)
from variational_autoencoder.model import VAE, VAEConfig

# ----------------------------------------------------------------------------------------------
# Fréchet distance


def test_frechet_distance_of_a_set_with_itself_is_zero():
    feats = np.random.default_rng(0).normal(size=(500, 8)) * np.arange(1, 9)
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_diagonal_gaussians_closed_form():
    # Diagonal covariances commute, so (S1 S2)^(1/2) = diag(sqrt(a b)) and the trace term is
    # sum(a + b - 2 sqrt(a b)) = sum((sqrt(a) - sqrt(b))^2).
    m1, m2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    expected = 1 + 0 + 4 + (1 - 2) ** 2 + 0 + (3 - 1) ** 2  # = 10
    assert frechet_distance_from_moments(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(expected)


def test_frechet_distance_rotated_and_one_dimensional():
    # Rotating both covariances by the same R leaves the distance unchanged (still the diagonal answer).
    theta = 0.7
    r = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    s1, s2 = r @ np.diag([1.0, 9.0]) @ r.T, r @ np.diag([4.0, 1.0]) @ r.T
    assert frechet_distance_from_moments(np.zeros(2), s1, np.zeros(2), s2) == pytest.approx(1 + 4)
    # 1-D: (m1 - m2)^2 + (sigma1 - sigma2)^2
    assert frechet_distance_from_moments(np.array([3.0]), np.array([[4.0]]), np.array([1.0]),
                                         np.array([[0.25]])) == pytest.approx(4 + 1.5 ** 2)


def test_frechet_distance_singular_covariances():
    # A dead feature (zero variance in both sets) contributes nothing.
    d = frechet_distance_from_moments(np.zeros(2), np.diag([4.0, 0.0]), np.zeros(2), np.diag([1.0, 0.0]))
    assert d == pytest.approx(1.0)


def test_frechet_distance_from_samples_matches_closed_form():
    rng = np.random.default_rng(1)
    n = 200_000
    a = rng.normal(size=(n, 2)) * [1.0, 2.0] + [0.0, 0.0]
    b = rng.normal(size=(n, 2)) * [3.0, 1.0] + [1.0, 0.0]
    expected = 1.0 + (1 - 3) ** 2 + (2 - 1) ** 2  # = 6
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.02)


# ----------------------------------------------------------------------------------------------
# classifier verdicts


def test_class_entropy_uniform_and_single_class():
    assert class_entropy(np.tile(np.arange(10), 7)) == pytest.approx(1.0)
    assert class_entropy(np.full(50, 3)) == pytest.approx(0.0)
    assert histogram_entropy(np.array([5, 5, 5, 5])) == pytest.approx(1.0)
    # two equally filled bins out of four: log 2 / log 4
    assert histogram_entropy(np.array([3, 0, 3, 0])) == pytest.approx(0.5)


def test_confidence_stats():
    probs = np.array([[0.95, 0.05], [0.5, 0.5], [0.1, 0.9], [0.3, 0.7]])
    stats = confidence_stats(probs, threshold=0.9)
    assert stats["mean_confidence"] == pytest.approx((0.95 + 0.5 + 0.9 + 0.7) / 4)
    assert stats["share_confident"] == pytest.approx(0.5)


# ----------------------------------------------------------------------------------------------
# latent geometry


def test_prior_radius_two_dimensions():
    # In 2-D, P(||z|| <= r) = 1 - exp(-r^2 / 2), so r = sqrt(-2 log 0.05).
    assert prior_radius(2) == pytest.approx(math.sqrt(-2 * math.log(0.05)))


@pytest.mark.parametrize("d", [2, 10])
def test_share_of_prior_draws_inside_95_region(d):
    z = torch.randn(200_000, d, generator=torch.Generator().manual_seed(d))
    geometry = latent_geometry(z)
    assert geometry["share_in_prior"] == pytest.approx(0.95, abs=0.003)
    assert geometry["centre_offset"] < 0.01
    assert geometry["std_per_dim"] == pytest.approx([1.0] * d, abs=0.01)


def test_latent_geometry_by_hand():
    codes = np.array([[1.0, 0.0], [3.0, 0.0], [1.0, 2.0], [3.0, 2.0]])
    geometry = latent_geometry(codes)
    assert geometry["mean_norm"] == pytest.approx(math.sqrt(5))  # mean (2, 1)
    assert geometry["std_per_dim"] == pytest.approx([1.0, 1.0])
    assert geometry["centre_offset"] == pytest.approx(math.sqrt(5))
    # radius sqrt(5.99) = 2.45: norms 1, 3, sqrt(5) = 2.24, sqrt(13) -> two inside
    assert geometry["share_in_prior"] == pytest.approx(0.5)


# ----------------------------------------------------------------------------------------------
# reconstruction and likelihood


class ConstantModel(nn.Module):
    """encode -> zeros (AE-like tensor or VAE-like tuple), code -> zeros, decode_logits -> zeros
    (p = 0.5 everywhere)."""

    def __init__(self, vae_like: bool):
        super().__init__()
        self.vae_like = vae_like
        self.dummy = nn.Parameter(torch.zeros(()))

    def encode(self, x, y=None):
        z = torch.zeros(x.shape[0], 2)
        return (z, torch.zeros_like(z)) if self.vae_like else z

    def code(self, x, y=None):
        encoded = self.encode(x)
        return encoded[0] if self.vae_like else encoded

    def decode_logits(self, z, y=None):
        return torch.zeros(z.shape[0], 1, 28, 28) + 0 * self.dummy


@pytest.mark.parametrize("vae_like", [False, True])
def test_reconstruction_metrics_by_hand(vae_like):
    x = torch.ones(5, 1, 28, 28)
    metrics = reconstruction_metrics(ConstantModel(vae_like), x, batch_size=2)
    assert metrics["bce"] == pytest.approx(784 * math.log(2), rel=1e-6)  # -log 0.5 per pixel
    assert metrics["mse"] == pytest.approx(0.25)  # (0.5 - 1)^2


def test_decoder_log_likelihood_by_hand():
    log_lik = decoder_log_likelihood(lambda z: torch.zeros(z.shape[0], 1, 28, 28))
    x = torch.rand(3, 1, 28, 28)
    assert torch.allclose(log_lik(x, torch.zeros(3, 2)), torch.full((3,), -784 * math.log(2)))


def linear_gaussian(latent_dim=2, data_dim=5, noise=0.5, seed=0):
    """z ~ N(0, I), x | z ~ N(W z + b, noise^2 I) with W = Q diag(c), Q orthonormal columns.

    Then W^T W = diag(c^2), so the exact posterior is diagonal: variance 1 / (1 + c^2 / noise^2),
    mean = variance * W^T (x - b) / noise^2; and the marginal is p(x) = N(b, W W^T + noise^2 I).
    """
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(data_dim, latent_dim, generator=gen, dtype=torch.float64))
    c = torch.tensor([2.0, 0.7], dtype=torch.float64)[:latent_dim]
    w, b = q * c, torch.randn(data_dim, generator=gen, dtype=torch.float64)
    marginal = torch.distributions.MultivariateNormal(b, w @ w.T + noise**2 * torch.eye(data_dim, dtype=torch.float64))

    def log_likelihood(x, z):
        return torch.distributions.Normal(z @ w.T + b, noise).log_prob(x).sum(1)

    def posterior(x):
        var = 1.0 / (1.0 + c**2 / noise**2)
        mu = var * ((x - b) @ w) / noise**2
        return mu, var.log().expand_as(mu)

    return marginal, log_likelihood, posterior


@pytest.mark.parametrize("k,per_pass", [(1, None), (10, 3), (64, None)])
def test_iwae_is_exact_with_the_true_posterior(k, per_pass):
    marginal, log_likelihood, posterior = linear_gaussian()
    torch.manual_seed(0)
    x = marginal.sample((20,))
    mu, logvar = posterior(x)
    smaller = [s for s in (1, 3, 7) if s < k]
    est = importance_weighted_bound(x, mu, logvar, log_likelihood, k, samples_per_pass=per_pass,
                                    generator=torch.Generator().manual_seed(0), smaller_k=smaller)
    # every importance weight equals p(x) exactly, so any k (and the ELBO) gives log p(x)
    assert torch.allclose(est.log_px, marginal.log_prob(x), atol=1e-9)
    assert torch.allclose(est.elbo, marginal.log_prob(x), atol=1e-9)
    assert sorted(est.by_k) == smaller
    for bound in est.by_k.values():
        assert torch.allclose(bound, marginal.log_prob(x), atol=1e-9)


def test_iwae_with_fewer_samples_from_the_same_draws():
    marginal, log_likelihood, posterior = linear_gaussian()
    torch.manual_seed(0)
    x = marginal.sample((50,))
    mu, logvar = posterior(x)
    mu, logvar = 0.5 * mu, logvar + 1.0  # a poor q, so that k matters
    est = importance_weighted_bound(x, mu, logvar, log_likelihood, 100, samples_per_pass=30,
                                    generator=torch.Generator().manual_seed(0), smaller_k=(1, 10, 50))
    # k' = 1 averages the single-draw bounds: the ELBO of the same draws
    assert torch.allclose(est.by_k[1], est.elbo, atol=1e-12)
    # nested groups (1 | 10 | 50 | 100): by Jensen, image by image, a log-mean-exp over a group is at
    # least the mean of its subgroups', so the bound can only rise with k on the same draws
    assert (est.by_k[10] >= est.by_k[1] - 1e-12).all() and (est.by_k[50] >= est.by_k[10] - 1e-12).all()
    assert (est.log_px >= est.by_k[50] - 1e-12).all()
    # k' = 10 written out: the same draws (one pass), weights w = p(x|z) p(z) / q(z|x) from the
    # densities, then the mean over the ten groups of log((w_1 + ... + w_10) / 10)
    one_pass = importance_weighted_bound(x, mu, logvar, log_likelihood, 100, samples_per_pass=100,
                                         generator=torch.Generator().manual_seed(0), smaller_k=(10,))
    eps = torch.randn((100, *mu.shape), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    z = q.loc + q.scale * eps  # (100, N, d)
    prior = torch.distributions.Normal(0.0, 1.0)
    log_w = (log_likelihood(x.expand(100, *x.shape).reshape(-1, *x.shape[1:]), z.reshape(-1, z.shape[-1])).view(100, -1)
             + prior.log_prob(z).sum(-1) - q.log_prob(z).sum(-1))
    by_hand = torch.stack([torch.log(torch.exp(g).mean(0)) for g in log_w.split(10)]).mean(0)
    assert torch.allclose(one_pass.by_k[10], by_hand, atol=1e-9)
    with pytest.raises(ValueError, match="smaller_k"):
        importance_weighted_bound(x, mu, logvar, log_likelihood, 10, smaller_k=(10,))


def test_iwae_bound_between_elbo_and_log_px_with_a_poor_posterior():
    marginal, log_likelihood, posterior = linear_gaussian()
    torch.manual_seed(0)
    x = marginal.sample((200,))
    mu, logvar = posterior(x)
    mu, logvar = 0.5 * mu, logvar + 1.0  # a deliberately wrong q
    gen = torch.Generator().manual_seed(1)
    est = importance_weighted_bound(x, mu, logvar, log_likelihood, 500, samples_per_pass=128, generator=gen)
    assert (est.log_px >= est.elbo).all()  # log-mean-exp >= mean-log, draw by draw (Jensen)
    exact = marginal.log_prob(x).mean()
    # on average the ELBO sits below log p(x) by KL(q || posterior), and k = 500 closes most of that gap
    assert est.elbo.mean() < exact - 0.1
    assert est.elbo.mean() < est.log_px.mean() <= exact + 0.01


def tiny_vae():
    torch.manual_seed(0)
    return VAE(VAEConfig(latent_dim=3, filters=(4, 8), kernel_sizes=(3, 3), strides=(2, 2))).eval()


def test_iwae_nll_of_a_vae_never_above_neg_elbo_on_the_same_draws():
    model, x = tiny_vae(), torch.rand(6, 1, 28, 28).round()
    result = iwae_nll(model, x, num_samples=16, batch_size=4, max_decodes=10)
    assert result["nll"] <= result["neg_elbo_same_draws"]
    assert result["k"] == 16 and result["images"] == 6
    # k = 1: the bound is the single-sample ELBO
    one = iwae_nll(model, x, num_samples=1)
    assert one["nll"] == pytest.approx(one["neg_elbo_same_draws"])
    # fewer samples from the same draws: the same main estimate, k' = 1 is the -ELBO of the draws,
    # and each smaller k lies above the k = 16 estimate (by its "excess")
    swept = iwae_nll(model, x, num_samples=16, batch_size=4, max_decodes=10, smaller_k=(4, 1, 16, 99))
    assert swept["nll"] == result["nll"]
    assert [r["k"] for r in swept["by_k"]] == [1, 4]  # sorted; k >= 16 dropped
    by_k = {r["k"]: r for r in swept["by_k"]}
    assert by_k[1]["nll"] == pytest.approx(result["neg_elbo_same_draws"])
    for r in by_k.values():
        assert r["excess"] == pytest.approx(r["nll"] - result["nll"]) and r["excess"] >= 0
    assert by_k[1]["excess"] >= by_k[4]["excess"]


def test_iwae_passes_of_another_size_draw_the_same_samples():
    """The CPU default went from 4,096 to 800 decodes a pass: with 100 images, 40 and 8 samples a
    pass, both multiples of 4, so each pass draws a multiple of 16 normal numbers for any latent
    size (CPU randn fills blocks of 16) and the estimate stays the same; 5 a pass draws other z."""
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=3, filters=(4, 8), kernel_sizes=(3, 3), strides=(2, 2))).eval()
    x = torch.rand(100, 1, 28, 28).round()
    one_pass = iwae_nll(model, x, num_samples=40, max_decodes=4096)  # 40 samples in one pass
    five_passes = iwae_nll(model, x, num_samples=40, max_decodes=800)  # 8 at a time
    assert five_passes["nll"] == pytest.approx(one_pass["nll"], rel=1e-12, abs=0)
    assert five_passes["se"] == pytest.approx(one_pass["se"], rel=1e-9, abs=0)
    assert iwae_nll(model, x, num_samples=40, max_decodes=500)["nll"] != pytest.approx(one_pass["nll"], abs=1e-6)


def test_neg_elbo_terms():
    model, x = tiny_vae(), torch.rand(7, 1, 28, 28)
    terms = neg_elbo(model, x, batch_size=3)
    assert terms["neg_elbo"] == pytest.approx(terms["recon"] + terms["kl"])
    assert terms["kl"] > 0 and terms["recon"] > 0
    assert neg_elbo(model, x, batch_size=5) == pytest.approx(neg_elbo(model, x, batch_size=5))  # fixed noise


def test_kl_per_dimension_and_active_units_by_hand():
    # dimension 0: mu in {-1, 1}, sigma 1 -> KL 0.5 * (1 + 1 - 1 - 0) = 0.5; variance of mu = 4/3 (unbiased, n = 4)
    # dimension 1: mu = 0.05 * (+-1), sigma^2 = e^-1 -> KL 0.5 * (0.0025 + e^-1 - 1 + 1); variance 0.0025 * 4/3
    mu = torch.tensor([[-1.0, 0.05], [1.0, -0.05], [-1.0, 0.05], [1.0, -0.05]])
    logvar = torch.tensor([[0.0, -1.0]] * 4)
    kl = kl_per_dimension(mu, logvar)
    assert kl[0] == pytest.approx(0.5) and kl[1] == pytest.approx(0.5 * (0.0025 + math.exp(-1)))
    units = active_units(mu)
    assert units["active"] == 1 and units["variance"] == pytest.approx([4 / 3, 0.0025 * 4 / 3])
    assert active_units(mu, threshold=0.001)["active"] == 2


def test_aggregate_kl_is_zero_when_every_posterior_is_the_prior():
    mu, logvar = torch.zeros(50, 3), torch.zeros(50, 3)
    result = aggregate_kl(mu, logvar, num_samples=500)
    assert result["kl"] == pytest.approx(0.0, abs=1e-9) and result["se"] == pytest.approx(0.0, abs=1e-9)


def test_aggregate_kl_of_one_gaussian_matches_the_closed_form():
    # q(z) = N(m, s^2) in 1-D: KL(q || N(0, 1)) = 0.5 * (m^2 + s^2 - 1 - log s^2)
    m, s2 = 0.7, 0.25
    result = aggregate_kl(torch.tensor([[m]]), torch.tensor([[math.log(s2)]]), num_samples=20_000, seed=1)
    exact = 0.5 * (m**2 + s2 - 1 - math.log(s2))
    assert abs(result["kl"] - exact) < 4 * result["se"] and result["se"] < 0.01


def test_aggregate_log_density_of_a_two_component_mixture():
    mu = torch.tensor([[-2.0], [2.0]])
    logvar = torch.zeros(2, 1)
    z = torch.tensor([[0.0], [2.0]])
    normal = lambda x: math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)  # noqa: E731
    expected = [math.log(0.5 * (normal(2.0) + normal(2.0))), math.log(0.5 * (normal(4.0) + normal(0.0)))]
    assert aggregate_log_density(z, mu, logvar).tolist() == pytest.approx(expected)

"""Loss terms against values worked out by hand."""

import math

import pytest
import torch

from vanila_autoencoder.model import ae_loss
from variational_autoencoder.model import bernoulli_nll, gaussian_kl, mean_squared_error, reparameterize, vae_loss


def test_kl_is_zero_at_the_prior():
    mu = torch.zeros(4, 3)
    logvar = torch.zeros(4, 3)
    assert gaussian_kl(mu, logvar).item() == 0.0


def test_kl_at_known_mean_and_sigma():
    # per dimension 0.5 (mu^2 + sigma^2 - 1 - ln sigma^2):
    # mu = 1, sigma = 0.5: 0.5 (1 + 0.25 - 1 + ln 4) ; mu = 2, sigma = 2: 0.5 (4 + 4 - 1 - ln 4)
    # the ln 4 terms cancel: total = 0.5 * 7.25 = 3.625
    mu = torch.tensor([[1.0, 2.0]])
    logvar = torch.log(torch.tensor([[0.25, 4.0]]))
    assert gaussian_kl(mu, logvar).item() == pytest.approx(3.625, abs=1e-6)


def test_kl_is_averaged_over_images_not_summed():
    mu = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    logvar = torch.log(torch.tensor([[0.25, 4.0], [1.0, 1.0]]))
    assert gaussian_kl(mu, logvar).item() == pytest.approx(3.625 / 2, abs=1e-6)


def test_bce_closed_form_on_a_tiny_tensor():
    # pixel 1: target 1, logit 0 -> ln 2.  pixel 2: target 0, logit ln 3 -> p = 3/4, -ln(1/4) = ln 4.
    # Summed over pixels: ln 8 nats for the image.
    logits = torch.tensor([[[[0.0, math.log(3.0)]]]])
    x = torch.tensor([[[[1.0, 0.0]]]])
    assert bernoulli_nll(logits, x).item() == pytest.approx(math.log(8.0), abs=1e-6)


def test_bce_of_zero_logits_is_ln2_per_pixel_whatever_the_target():
    x = torch.rand(5, 1, 28, 28)
    assert bernoulli_nll(torch.zeros_like(x), x).item() == pytest.approx(784 * math.log(2.0), rel=1e-6)


def test_mse_is_per_image_pixel_mean_and_weighted_in_vae_loss():
    logits = torch.zeros(2, 1, 28, 28)  # sigmoid -> 0.5 everywhere
    x = torch.zeros(2, 1, 28, 28)  # error 0.5 -> 0.25 per pixel
    assert mean_squared_error(logits, x).item() == pytest.approx(0.25)
    mu = torch.tensor([[1.0, 2.0], [1.0, 2.0]])
    logvar = torch.log(torch.tensor([[0.25, 4.0], [0.25, 4.0]]))
    terms = vae_loss(logits, x, mu, logvar, loss="mse", recon_weight=1000.0, beta=1.0)
    assert terms["recon"].item() == pytest.approx(0.25)
    assert terms["kl"].item() == pytest.approx(3.625, abs=1e-5)
    assert terms["loss"].item() == pytest.approx(1000 * 0.25 + 3.625, abs=1e-3)
    # beta weights only the KL term
    terms = vae_loss(logits, x, mu, logvar, loss="mse", recon_weight=1000.0, beta=0.5)
    assert terms["loss"].item() == pytest.approx(250 + 0.5 * 3.625, abs=1e-3)


def test_default_vae_loss_is_bce_plus_kl():
    logits = torch.zeros(3, 1, 28, 28)
    x = torch.rand(3, 1, 28, 28)
    mu = torch.zeros(3, 2)
    logvar = torch.zeros(3, 2)
    terms = vae_loss(logits, x, mu, logvar)
    assert terms["loss"].item() == pytest.approx(784 * math.log(2.0), rel=1e-6)


def test_ae_loss_is_the_reconstruction():
    logits = torch.zeros(2, 1, 28, 28)
    x = torch.zeros(2, 1, 28, 28)
    assert ae_loss(logits, x, "mse")["loss"].item() == pytest.approx(0.25)
    assert ae_loss(logits, x, "bce")["loss"].item() == pytest.approx(784 * math.log(2.0), rel=1e-6)
    with pytest.raises(ValueError):
        ae_loss(logits, x, "l1")


def test_gradients_reach_mu_and_logvar_through_the_sampling():
    torch.manual_seed(0)
    mu = torch.tensor([[0.3, -0.2]], requires_grad=True)
    logvar = torch.tensor([[0.1, -0.4]], requires_grad=True)
    z = reparameterize(mu, logvar)
    z.sum().backward()
    # dz/dmu = 1; dz/dlogvar = 0.5 * sigma * eps = 0.5 * (z - mu)
    assert torch.allclose(mu.grad, torch.ones_like(mu))
    assert torch.allclose(logvar.grad, 0.5 * (z - mu).detach(), atol=1e-6)
    assert logvar.grad.abs().min() > 0


def test_reparameterize_has_the_right_moments():
    torch.manual_seed(1)
    mu = torch.full((200_000, 1), 1.5)
    logvar = torch.full((200_000, 1), math.log(0.25))  # sigma = 0.5
    z = reparameterize(mu, logvar)
    assert z.mean().item() == pytest.approx(1.5, abs=0.01)
    assert z.std().item() == pytest.approx(0.5, abs=0.01)

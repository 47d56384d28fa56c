"""A convolutional variational autoencoder: q(z|x) = N(mu, diag(sigma^2)), p(z) = N(0, I).

The KL term pulls every posterior towards the prior, so the codes fill a compact region around
the origin and decoding z ~ N(0, I) gives well-formed digits (see README).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from common.losses import RECON_LOSSES, gaussian_kl, reconstruction_loss
from common.nets import ConvDecoder, ConvEncoder, ConvNetConfig


@dataclass
class VAEConfig(ConvNetConfig):
    """Architecture fields (see ConvNetConfig) plus the training objective."""

    loss: str = "bce"  # reconstruction loss: "bce" (Bernoulli, nats/image) or "mse" (the original)
    recon_weight: float = 1.0  # multiplies the reconstruction term (the original: 1000 with mse)
    beta: float = 1.0  # multiplies the KL term; 1 gives the ELBO

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss not in RECON_LOSSES:
            raise ValueError(f"loss must be one of {', '.join(RECON_LOSSES)}, got {self.loss!r}")
        if not self.recon_weight > 0:
            raise ValueError(f"recon_weight must be positive, got {self.recon_weight}")
        if not self.beta >= 0:
            raise ValueError(f"beta must be non-negative, got {self.beta}")


class VAEOutput(NamedTuple):
    logits: torch.Tensor  # (N, C, H, W) decoder output at the sampled z, before the sigmoid
    mu: torch.Tensor  # (N, latent_dim) posterior mean
    logvar: torch.Tensor  # (N, latent_dim) posterior log-variance
    z: torch.Tensor  # (N, latent_dim) one sample from q(z|x)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I): the noise is an input, so gradients reach mu and logvar."""
    eps = torch.randn_like(mu)
    return mu + torch.exp(0.5 * logvar) * eps


class VAE(nn.Module):
    kind = "vae"  # recorded in checkpoints so load_model can rebuild the right class

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.latent_dim = config.latent_dim
        self.encoder = ConvEncoder(config)
        self.fc_mu = nn.Linear(self.encoder.out_features, config.latent_dim)
        self.fc_logvar = nn.Linear(self.encoder.out_features, config.latent_dim)
        self.decoder = ConvDecoder(config)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, C, H, W) in [0, 1] -> (mu, logvar), each (N, latent_dim)."""
        h = self.encoder(x)
        return self.fc_mu(h), self.fc_logvar(h)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, latent_dim) -> pixel intensities (N, C, H, W) in [0, 1]."""
        return torch.sigmoid(self.decoder(z))

    def forward(self, x: torch.Tensor) -> VAEOutput:
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar)
        return VAEOutput(logits=self.decoder(z), mu=mu, logvar=logvar, z=z)


def vae_loss(
    logits: torch.Tensor,
    x: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    loss: str = "bce",
    recon_weight: float = 1.0,
    beta: float = 1.0,
) -> dict[str, torch.Tensor]:
    """recon_weight * reconstruction + beta * KL; with the defaults this is -ELBO in nats/image."""
    recon = reconstruction_loss(logits, x, loss)
    kl = gaussian_kl(mu, logvar)
    return {"loss": recon_weight * recon + beta * kl, "recon": recon, "kl": kl}

"""A convolutional variational autoencoder: q(z|x) = N(mu, diag(sigma^2)), p(z) = N(0, I).

The KL term pulls every posterior towards the prior, so the codes fill a compact region around
the origin and decoding z ~ N(0, I) gives well-formed digits (see README).

With `conditional=True` it is a conditional VAE: q(z|x, y) and p(x|z, y), the one-hot digit label y
joined to the encoder's features and to z. The latent space then no longer needs to encode the
class, only the "style"; `decode(z, y)` writes any digit in the style z.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from common.conv import ConvDecoder, ConvEncoder, ConvNetConfig
from common.losses import RECON_LOSSES, elbo_terms, reconstruction_loss, reparameterize
from common.options import non_negative_float, option, positive_float


@dataclass
class VAEConfig(ConvNetConfig):
    """Architecture fields (see ConvNetConfig) plus the training objective."""

    loss: str = option("bce", "reconstruction loss: bce = Bernoulli, nats/image; mse = the original's",
                       choices=RECON_LOSSES)
    recon_weight: float = option(1.0, "weight of the reconstruction term (the original: 1000 with --loss mse)",
                                 parse=positive_float)
    beta: float = option(1.0, "weight of the KL term; 1 gives the ELBO", parse=non_negative_float)
    conditional: bool = option(False, "condition encoder and decoder on the digit label (a conditional VAE)")
    num_classes: int = 10  # size of the one-hot label of a conditional VAE (not a flag: the data's)

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


class VAE(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.latent_dim = config.latent_dim
        self.conditional = config.conditional
        label_size = config.num_classes if config.conditional else 0
        self.encoder = ConvEncoder(config)
        self.fc_mu = nn.Linear(self.encoder.out_features + label_size, config.latent_dim)
        self.fc_logvar = nn.Linear(self.encoder.out_features + label_size, config.latent_dim)
        self.decoder = ConvDecoder(config, extra_inputs=label_size)

    def _join_label(self, h: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """(N, k) -> (N, k + num_classes) with the one-hot label, for a conditional VAE; else h."""
        if not self.conditional:
            return h
        if y is None:
            raise ValueError("a conditional VAE needs the digit labels y")
        return torch.cat([h, F.one_hot(y, self.config.num_classes).to(h.dtype)], 1)

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, C, H, W) in [0, 1] -> (mu, logvar), each (N, latent_dim). y (N,): digit labels,
        used by a conditional VAE only."""
        h = self._join_label(self.encoder(x), y)
        return self.fc_mu(h), self.fc_logvar(h)

    def code(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The point code of each image, for plots and metrics: the posterior mean mu."""
        return self.encode(x, y)[0]

    def decode_logits(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(self._join_label(z, y))

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """z (N, latent_dim) -> pixel intensities (N, C, H, W) in [0, 1]; y (N,) for a conditional VAE."""
        return torch.sigmoid(self.decode_logits(z, y))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> VAEOutput:
        mu, logvar = self.encode(x, y)
        z = reparameterize(mu, logvar)
        return VAEOutput(logits=self.decode_logits(z, y), mu=mu, logvar=logvar, z=z)


def vae_loss(
    logits: torch.Tensor,
    x: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    loss: str = "bce",
    recon_weight: float = 1.0,
    beta: float = 1.0,
) -> dict[str, torch.Tensor]:
    """recon_weight * reconstruction + beta * KL; with the defaults this is -ELBO in nats/image.

    "neg_elbo" is always the Bernoulli -ELBO (beta = 1), whatever the training objective, so runs
    with different objectives can be compared; it is reported, not minimised.
    """
    elbo = elbo_terms(logits, x, mu, logvar)
    recon = elbo["bce"] if loss == "bce" else reconstruction_loss(logits, x, loss)
    kl = elbo["kl"]
    return {"loss": recon_weight * recon + beta * kl, "recon": recon, "kl": kl, "neg_elbo": elbo["neg_elbo"].detach()}

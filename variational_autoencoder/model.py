"""A convolutional variational autoencoder: q(z|x) = N(mu, diag(sigma^2)), p(z) = N(0, I).

The KL term pulls every posterior towards the prior, so the codes fill a compact region around
the origin and decoding z ~ N(0, I) gives well-formed digits (see README).

With `conditional=True` it is a conditional VAE: q(z|x, y) and p(x|z, y), the one-hot digit label y
joined to the encoder's features and to z. The latent space then no longer needs to encode the
class, only the "style"; `decode(z, y)` writes any digit in the style z.

The VAE's mathematics is defined here once and reused by training, the metrics and the IWAE
(experiments/metrics.py): the pixel likelihood log p(x|z), the prior log p(z), the
reparameterisation, the Gaussian KL and the -ELBO. All of it is in nats, reduced in float32 even
under bfloat16 autocast (a sum over 784 pixels in bf16 loses about two significant digits).
To give the decoder another likelihood (say a Gaussian), change `log_likelihood` (and
`reconstruction_loss`'s "bce" name with it): every number downstream follows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from common.nets import ConvDecoder, ConvEncoder, ConvNetConfig
from common.options import NumberRange, option

RECON_LOSSES = ("bce", "mse")
LOG_2PI = math.log(2 * math.pi)


# ----------------------------------------------------------------------------------------------
# the probability model: p(x|z), p(z), q(z|x)


def log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x | z) under independent Bernoulli pixels with these logits: (N, ...) -> (N,) nats.
    BCE with logits, summed over pixels; the targets may be grey levels in [0, 1]."""
    return -F.binary_cross_entropy_with_logits(logits.float(), x.float(), reduction="none").flatten(1).sum(1)


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x | z) in nats per image, averaged over the batch."""
    return -log_likelihood(logits, x).mean()


def mean_squared_error(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean of (sigmoid(logits) - x)^2 over pixels and images (Keras' "mse", the original recipe)."""
    return F.mse_loss(torch.sigmoid(logits.float()), x.float())


def reconstruction_loss(logits: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    """The reconstruction term a model minimises: "bce" = -log p(x|z) per image, "mse" = the original's.
    (The AE uses it too, so both models' reconstructions are measured on one scale.)"""
    if kind == "bce":
        return bernoulli_nll(logits, x)
    if kind == "mse":
        return mean_squared_error(logits, x)
    raise ValueError(f"unknown reconstruction loss {kind!r}; choose from {', '.join(RECON_LOSSES)}")


def log_prior(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I), summed over the last dimension: (..., d) -> (...)."""
    return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)


def log_posterior(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log q(z|x) = log N(z; mu, diag(exp(logvar))), summed over the last dimension: (..., d) -> (...)."""
    return -0.5 * ((z - mu).pow(2) * torch.exp(-logvar) + logvar + LOG_2PI).sum(-1)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I): the noise is an input, so gradients reach mu and
    logvar. `generator` gives reproducible noise (evaluation); None uses the global stream."""
    # randn_like when there is no generator: the same numbers, and torch.compile can trace it with a
    # symbolic batch size (torch.randn(mu.shape) cannot)
    eps = torch.randn_like(mu) if generator is None else torch.randn(
        mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    return mu + torch.exp(0.5 * logvar) * eps


def kl_terms(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) of each latent dimension of each image, in closed
    form: 0.5 * (mu^2 + sigma^2 - 1 - log sigma^2); (N, d), in the inputs' dtype."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) in nats per image, averaged over the batch."""
    return kl_terms(mu.float(), logvar.float()).sum(1).mean()


def elbo_terms(logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
               ) -> dict[str, torch.Tensor]:
    """-ELBO = E_q[-log p(x|z)] + KL(q(z|x) || N(0, I)), nats per image, estimated with the z that
    produced `logits`: {"neg_elbo", "bce", "kl"}."""
    bce = bernoulli_nll(logits, x)
    kl = gaussian_kl(mu, logvar)
    return {"neg_elbo": bce + kl, "bce": bce, "kl": kl}


# Largest --beta and --recon-weight: a thousand times the original's 1000, and far below where the
# weighted float32 loss overflows to infinity (--beta 1e308 did at the first step).
MAX_LOSS_WEIGHT = 1e6


@dataclass
class VAEConfig(ConvNetConfig):
    """Architecture fields (see ConvNetConfig) plus the training objective."""

    loss: str = option("bce", "reconstruction loss: bce = Bernoulli, nats/image; mse = the original's",
                       choices=RECON_LOSSES)
    recon_weight: float = option(1.0, "weight of the reconstruction term (the original: 1000 with --loss mse)",
                                 parse=NumberRange(float, 0.0, MAX_LOSS_WEIGHT, low_open=True))
    beta: float = option(1.0, "weight of the KL term; 1 gives the ELBO", parse=NumberRange(float, 0.0, MAX_LOSS_WEIGHT))
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

"""Loss terms and the Gaussian pieces both models and the metrics share, each defined once.

Terms are reduced to one number per image, then averaged over the batch. All reductions happen in
float32 even under bfloat16 autocast: a sum over 784 pixels in bf16 loses about two significant
digits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

RECON_LOSSES = ("bce", "mse")


def bernoulli_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x | z) under independent Bernoulli pixels with these logits: (N, ...) -> (N,) nats.

    BCE with logits, summed over pixels; the targets may be grey levels in [0, 1].
    """
    return -F.binary_cross_entropy_with_logits(logits.float(), x.float(), reduction="none").flatten(1).sum(1)


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x | z) in nats per image, averaged over the batch."""
    return -bernoulli_log_likelihood(logits, x).mean()


def mean_squared_error(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean of (sigmoid(logits) - x)^2 over pixels and images (Keras' "mse")."""
    return F.mse_loss(torch.sigmoid(logits.float()), x.float())


def reconstruction_loss(logits: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "bce":
        return bernoulli_nll(logits, x)
    if kind == "mse":
        return mean_squared_error(logits, x)
    raise ValueError(f"unknown reconstruction loss {kind!r}; choose from {', '.join(RECON_LOSSES)}")


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) in nats per image (mean over the batch).

    Closed form per dimension: 0.5 * (mu^2 + sigma^2 - 1 - log sigma^2).
    """
    mu, logvar = mu.float(), logvar.float()
    return (0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)).sum(1).mean()


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I): the noise is an input, so gradients reach mu and
    logvar. `generator` gives reproducible noise (evaluation); None uses the global stream."""
    # randn_like when there is no generator: the same numbers, and torch.compile can trace it with a
    # symbolic batch size (torch.randn(mu.shape) cannot)
    eps = torch.randn_like(mu) if generator is None else torch.randn(
        mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    return mu + torch.exp(0.5 * logvar) * eps


def elbo_terms(logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
               ) -> dict[str, torch.Tensor]:
    """-ELBO = E_q[-log p(x|z)] + KL(q(z|x) || N(0, I)) for a Bernoulli decoder, nats per image,
    estimated with the z that produced `logits`: {"neg_elbo", "bce", "kl"}."""
    bce = bernoulli_nll(logits, x)
    kl = gaussian_kl(mu, logvar)
    return {"neg_elbo": bce + kl, "bce": bce, "kl": kl}

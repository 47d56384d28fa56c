"""Loss terms shared by both models, each reduced to one number per image, then averaged.

All reductions happen in float32 even under bfloat16 autocast: a sum over 784 pixels in bf16
loses about two significant digits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

RECON_LOSSES = ("bce", "mse")


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x | z) under independent Bernoulli pixels, in nats per image (mean over the batch).

    BCE with logits, summed over pixels; the targets may be grey levels in [0, 1].
    """
    per_pixel = F.binary_cross_entropy_with_logits(logits.float(), x.float(), reduction="none")
    return per_pixel.flatten(1).sum(1).mean()


def mean_squared_error(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-image mean of (sigmoid(logits) - x)^2 over pixels, averaged over images (Keras' "mse")."""
    return (torch.sigmoid(logits.float()) - x.float()).pow(2).flatten(1).mean(1).mean()


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) in nats per image (mean over the batch).

    Closed form per dimension: 0.5 * (mu^2 + sigma^2 - 1 - log sigma^2).
    """
    mu, logvar = mu.float(), logvar.float()
    return (0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)).sum(1).mean()


def reconstruction_loss(logits: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "bce":
        return bernoulli_nll(logits, x)
    if kind == "mse":
        return mean_squared_error(logits, x)
    raise ValueError(f"unknown reconstruction loss {kind!r}; choose from {', '.join(RECON_LOSSES)}")

"""A plain convolutional autoencoder: x -> z -> x_hat, trained only to reconstruct.

Nothing asks its codes to fill any particular region of latent space, which is why decoding
random latent points gives poor digits (see README).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from common.nets import ConvDecoder, ConvEncoder, ConvNetConfig
from common.options import option

# the same reconstruction term as the VAE's, so both models' reconstructions are in the same nats
from variational_autoencoder.model import RECON_LOSSES, bernoulli_nll, reconstruction_loss


@dataclass
class AEConfig(ConvNetConfig):
    """Architecture fields (see ConvNetConfig) plus the training objective."""

    loss: str = option("bce", "reconstruction loss: bce = Bernoulli, nats/image; mse = the original's",
                       choices=RECON_LOSSES)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss not in RECON_LOSSES:
            raise ValueError(f"loss must be one of {', '.join(RECON_LOSSES)}, got {self.loss!r}")


class AEOutput(NamedTuple):
    logits: torch.Tensor  # (N, C, H, W) decoder output before the sigmoid
    z: torch.Tensor  # (N, latent_dim)


class Autoencoder(nn.Module):
    def __init__(self, config: AEConfig):
        super().__init__()
        self.config = config
        self.latent_dim = config.latent_dim
        self.encoder = ConvEncoder(config)
        self.fc_z = nn.Linear(self.encoder.out_features, config.latent_dim)
        self.decoder = ConvDecoder(config)

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x (N, C, H, W) in [0, 1] -> z (N, latent_dim). (y, the labels, is not used: the shared
        interface passes it for conditional models.)"""
        return self.fc_z(self.encoder(x))

    def code(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The point code of each image, for plots and metrics: z itself."""
        return self.encode(x)

    def decode_logits(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(z)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """z (N, latent_dim) -> pixel intensities (N, C, H, W) in [0, 1]."""
        return torch.sigmoid(self.decoder(z))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> AEOutput:
        z = self.encode(x)
        return AEOutput(logits=self.decoder(z), z=z)


def ae_loss(logits: torch.Tensor, x: torch.Tensor, loss: str = "bce") -> dict[str, torch.Tensor]:
    """The AE objective is the reconstruction term alone. With --loss mse the Bernoulli NLL is
    reported too ("bce", not minimised), so it can be compared with other runs in nats."""
    recon = reconstruction_loss(logits, x, loss)
    terms = {"loss": recon, "recon": recon}
    if loss != "bce":
        terms["bce"] = bernoulli_nll(logits.detach(), x)
    return terms

"""A plain convolutional autoencoder: x -> z -> x_hat, trained only to reconstruct.

Nothing asks its codes to fill any particular region of latent space, which is why decoding
random latent points gives poor digits (see README).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from common.losses import RECON_LOSSES, reconstruction_loss
from common.nets import ConvDecoder, ConvEncoder, ConvNetConfig


@dataclass
class AEConfig(ConvNetConfig):
    """Architecture fields (see ConvNetConfig) plus the training objective."""

    loss: str = "bce"  # reconstruction loss: "bce" (Bernoulli, nats/image) or "mse" (the original)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss not in RECON_LOSSES:
            raise ValueError(f"loss must be one of {', '.join(RECON_LOSSES)}, got {self.loss!r}")


class AEOutput(NamedTuple):
    logits: torch.Tensor  # (N, C, H, W) decoder output before the sigmoid
    z: torch.Tensor  # (N, latent_dim)


class Autoencoder(nn.Module):
    kind = "ae"  # recorded in checkpoints so load_model can rebuild the right class

    def __init__(self, config: AEConfig):
        super().__init__()
        self.config = config
        self.latent_dim = config.latent_dim
        self.encoder = ConvEncoder(config)
        self.fc_z = nn.Linear(self.encoder.out_features, config.latent_dim)
        self.decoder = ConvDecoder(config)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, C, H, W) in [0, 1] -> z (N, latent_dim)."""
        return self.fc_z(self.encoder(x))

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, latent_dim) -> pixel intensities (N, C, H, W) in [0, 1]."""
        return torch.sigmoid(self.decoder(z))

    def forward(self, x: torch.Tensor) -> AEOutput:
        z = self.encode(x)
        return AEOutput(logits=self.decoder(z), z=z)


def ae_loss(logits: torch.Tensor, x: torch.Tensor, loss: str = "bce") -> dict[str, torch.Tensor]:
    """The AE objective is the reconstruction term alone."""
    recon = reconstruction_loss(logits, x, loss)
    return {"loss": recon, "recon": recon}

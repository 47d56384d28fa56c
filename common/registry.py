"""Which models exist and what every program needs of one: the model table and the model interface.

A checkpoint records its kind, and every program looks it up in MODELS; modules are imported by
name when needed, so common/ never imports the model folders. A new model: its folder and one line here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class GenerativeModel(Protocol):
    """What train.py, plot.py and the comparison need of a model (an nn.Module). Every method takes the
    digit labels y (N,), used only by a conditional model; images are (N, C, H, W) in [0, 1]."""

    config: Any  # the config dataclass it was built from (saved in checkpoints, rebuilt on load)
    latent_dim: int

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Any:
        """The encoder's output: z for the AE, (mu, logvar) of q(z|x) for the VAE."""

    def code(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """One point code per image (N, latent_dim), for plots and metrics: z, or the posterior mean."""

    def decode_logits(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """z (N, latent_dim) -> the decoder's logits (N, C, H, W)."""

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """z (N, latent_dim) -> pixel intensities (N, C, H, W) in [0, 1]."""


@dataclass(frozen=True)
class ModelEntry:
    module: str  # importable module that defines the model and its config
    model_class: str  # nn.Module subclass, built as model_class(config)
    config_class: str  # the config dataclass
    description: str  # for messages: what a checkpoint of this kind holds, and where its scripts are

    @property
    def package(self) -> str:
        """The model's folder, which holds its train.py and plot.py."""
        return self.module.rsplit(".", 1)[0]


MODELS: dict[str, ModelEntry] = {
    "ae": ModelEntry("vanila_autoencoder.model", "Autoencoder", "AEConfig", "an autoencoder (vanila_autoencoder)"),
    "vae": ModelEntry("variational_autoencoder.model", "VAE", "VAEConfig",
                      "a variational autoencoder (variational_autoencoder)"),
}


def model_classes(kind: str) -> tuple[type[nn.Module], type]:
    """(model class, config class) of a registered kind."""
    entry = MODELS[kind]
    module = importlib.import_module(entry.module)
    return getattr(module, entry.model_class), getattr(module, entry.config_class)

"""Which models exist: one line per model kind, naming the module that defines it.

A checkpoint records its kind; `load_model` looks the kind up here to rebuild the model. The
modules are imported by name when needed, so common/ never imports the model folders.
Adding a model: its folder (model.py, train.py, plot.py) and one line in MODELS.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class ModelEntry:
    module: str  # importable module that defines the model and its config
    model_class: str  # nn.Module subclass, built as model_class(config)
    config_class: str  # the config dataclass
    description: str  # for messages: what a checkpoint of this kind holds, and where its scripts are


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

"""Train the convolutional variational autoencoder on MNIST.

    python variational_autoencoder/train.py --data-dir ../shared/data
    python variational_autoencoder/plot.py --data-dir ../shared/data

Writes <out-dir>/checkpoints/last.pt every epoch and <out-dir>/history.json; --out-dir defaults
to this folder. The original Keras objective: --loss mse --recon-weight 1000.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.losses import bernoulli_nll
from common.training import (LossFn, add_model_args, add_train_args, exit_on_error, non_negative_float,
                             positive_float, run_training)
from variational_autoencoder.model import VAE, VAEConfig, vae_loss

HERE = Path(__file__).resolve().parent


def make_loss_fn(config: VAEConfig) -> LossFn:
    def loss_fn(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = model(x)
        terms = vae_loss(out.logits, x, out.mu, out.logvar, config.loss, config.recon_weight, config.beta)
        # -ELBO in nats (Bernoulli decoder, beta = 1) whatever the training objective
        bce = terms["recon"] if config.loss == "bce" else bernoulli_nll(out.logits, x)
        terms["neg_elbo"] = (bce + terms["kl"]).detach()
        return terms

    return loss_fn


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train the variational autoencoder (VAE) on MNIST.")
    add_model_args(parser, VAEConfig)
    parser.add_argument("--recon-weight", type=positive_float,
                        help="weight of the reconstruction term (default: 1; the original: 1000 with --loss mse)")
    parser.add_argument("--beta", type=non_negative_float, help="weight of the KL term (default: 1)")
    add_train_args(parser, default_out_dir=HERE)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with exit_on_error():
        return run_training(kind="vae", config_cls=VAEConfig, build_model=VAE, make_loss_fn=make_loss_fn,
                            args=args, default_out_dir=HERE, argv=sys.argv[1:] if argv is None else list(argv))


if __name__ == "__main__":
    main()

"""Train the plain convolutional autoencoder on MNIST.

    python vanila_autoencoder/train.py --data-dir ../shared/data
    python vanila_autoencoder/plot.py --data-dir ../shared/data

Writes <out-dir>/checkpoints/last.pt every epoch and <out-dir>/history.json; --out-dir defaults
to this folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.losses import bernoulli_nll
from common.training import LossFn, add_model_args, add_train_args, exit_on_error, run_training
from vanila_autoencoder.model import AEConfig, Autoencoder, ae_loss

HERE = Path(__file__).resolve().parent


def make_loss_fn(config: AEConfig) -> LossFn:
    def loss_fn(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = model(x)
        terms = ae_loss(out.logits, x, config.loss)
        if config.loss != "bce":  # always report the Bernoulli NLL in nats, comparable across runs
            terms["bce"] = bernoulli_nll(out.logits.detach(), x)
        return terms

    return loss_fn


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train the plain autoencoder (AE) on MNIST.")
    add_model_args(parser, AEConfig)
    add_train_args(parser, default_out_dir=HERE)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with exit_on_error():
        return run_training(kind="ae", config_cls=AEConfig, build_model=Autoencoder, make_loss_fn=make_loss_fn,
                            args=args, default_out_dir=HERE, argv=sys.argv[1:] if argv is None else list(argv))


if __name__ == "__main__":
    main()

"""Train the plain convolutional autoencoder on MNIST.

    python vanila_autoencoder/train.py --data-dir ../shared/data
    python vanila_autoencoder/plot.py --data-dir ../shared/data

Writes <out-dir>/checkpoints/last.pt every epoch, <out-dir>/history.json and <out-dir>/run.json;
--out-dir defaults to this folder. The original Keras objective: --loss mse.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from common.errors import exit_on_error
from common.host_memory import skip_exit_collection
from common.loop import Batch
from common.trainer import build_parser, run_training
from vanila_autoencoder.model import AEConfig, Autoencoder, ae_loss

HERE = Path(__file__).resolve().parent


def loss_fn(model: Autoencoder, batch: Batch) -> dict[str, torch.Tensor]:
    """The named loss terms of one batch; "loss" is minimised."""
    x, y = batch
    out = model(x, y)
    return ae_loss(out.logits, x, model.config.loss)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser("Train the plain autoencoder (AE) on MNIST.", AEConfig, HERE).parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with exit_on_error():
        return run_training(kind="ae", model_cls=Autoencoder, config_cls=AEConfig, loss_fn=loss_fn, args=args,
                            default_out_dir=HERE, argv=sys.argv[1:] if argv is None else list(argv))


if __name__ == "__main__":
    main()
    skip_exit_collection()  # about 0.6 s less to exit (common/host_memory.py)

"""Train the plain convolutional autoencoder on MNIST.

    python vanila_autoencoder/train.py
    python vanila_autoencoder/plot.py

Writes <out-dir>/checkpoints/last.pt every epoch, <out-dir>/history.json and <out-dir>/run.json;
--out-dir defaults to this folder. The original Keras objective: --loss mse.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from common.errors import exit_on_error
from common.loop import Batch, epoch_batches, evaluate, load_training_data, make_optimizer, make_step, train_one_epoch
from common.run import Run, build_parser
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
    with exit_on_error(), Run("ae", AEConfig, args, HERE, argv) as run:
        tc = run.train  # batch size, lr, epochs, seed, ... (common/loop.py: TrainConfig)
        train_data, test_data = load_training_data(tc, run.device)  # every image on the device, once
        torch.manual_seed(tc.seed)
        model = Autoencoder(run.config).to(run.device, memory_format=tc.memory_format)
        optimizer = make_optimizer(model, tc.lr)
        run.restore(model, optimizer)  # --resume: the weights, Adam's state and the RNG state
        net = model if tc.compile == "off" else torch.compile(model, mode=tc.compile)
        step = make_step(net, optimizer, loss_fn, run.amp, cuda_graph=tc.cuda_graph and tc.compile == "off")
        for epoch in run.epochs(train_data, test_data, step):
            t0 = time.perf_counter()
            train_terms = train_one_epoch(net, epoch_batches(train_data, tc, epoch), optimizer, loss_fn,
                                          train_step=step, lr_for_step=run.lr_for_step, epoch=epoch,
                                          log_every=tc.log_every, on_log=run.on_log, check_stop=run.check_stop)
            seconds = time.perf_counter() - t0
            test_terms = evaluate(net, test_data, loss_fn, tc.eval_batch_size, amp=run.amp, seed=tc.seed)
            run.save(model, optimizer, train_terms, test_terms, seconds)  # checkpoint, history, codes
    return run.result


if __name__ == "__main__":
    main()

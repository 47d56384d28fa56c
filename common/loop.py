"""How a model is trained: the settings (TrainConfig), the data on the device and each epoch's
batches, the step, the epoch, the evaluation and the learning-rate schedule, top to bottom.

A model's train.py supplies `loss_fn(model, (x, y)) -> {"loss": ..., other terms}`: "loss" is
minimised, every term averaged over the epoch. Keeping the run is common/run.py's job.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from common.data import (
    BINARIZATIONS,
    DATASETS,
    Tensors,
    binarization_generator,
    binarized,
    epoch_generator,
    evaluation_split,
    iterate_batches,
    load_split,
)
from common.device import DEVICES, PRECISIONS, fork_rng
from common.errors import TrainingError
from common.options import check_options, epochs_int, learning_rate, option, positive_int, seed_int

Batch = tuple[torch.Tensor, torch.Tensor]  # images (N, C, H, W) in [0, 1], labels (N,)
LossFn = Callable[[nn.Module, Batch], dict[str, torch.Tensor]]
Amp = Callable[[], contextlib.AbstractContextManager]  # a fresh autocast context per use
LR_SCHEDULES = ("constant", "cosine")
COMPILE_MODES = ("off", "default", "reduce-overhead")


@dataclass
class TrainConfig:
    """How to train (not what): train.py's flags besides the model's. Runtime options may change on --resume."""

    epochs: int = option(8, "total epochs (on --resume: the total to reach)", parse=epochs_int, runtime=True)
    batch_size: int = option(128, "images per optimisation step", parse=positive_int)
    lr: float = option(2e-3, "Adam learning rate (the peak, with a schedule)", parse=learning_rate)
    lr_schedule: str = option("cosine", "constant, or cosine decay to 0 over --epochs, step by step",
                              choices=LR_SCHEDULES)
    seed: int = option(0, "seeds initialisation, shuffling and the VAE's noise", parse=seed_int)
    data_dir: str = option("data", "folder holding MNIST/raw/ (torchvision's layout)", runtime=True)
    dataset: str = option("mnist", "which MNIST-format dataset", choices=tuple(DATASETS))
    binarize: str = option("none", "none: grey levels; dynamic: every training image drawn as Bernoulli(intensity) "
                                   "afresh each time it is used, evaluation on one fixed binary test set",
                           choices=BINARIZATIONS)
    download: bool = option(True, "download the dataset when missing", runtime=True)
    out_dir: str = option(".", "where checkpoints/, figures/, history.json and run.json go", runtime=True)
    device: str = option("auto", "auto: cuda, then mps, then cpu", choices=DEVICES, runtime=True)
    precision: str = option("auto", "bf16 autocast or fp32; auto: bf16 where the hardware is fast at it",
                            choices=PRECISIONS, runtime=True)
    channels_last: bool = option(True, "NHWC memory format: faster convolutions on CPU and GPU", runtime=True)
    compile: str = option("off", "torch.compile the model: off, default, or reduce-overhead (CUDA graphs: fewer "
                                 "kernel launches on a GPU)", choices=COMPILE_MODES, runtime=True)
    cuda_graph: bool = option(True, "on CUDA: replay the step's forward and backward as one captured CUDA graph "
                                    "(one launch instead of one per kernel; ignored on a CPU and with --compile)",
                              runtime=True)
    eval_batch_size: int = option(1000, "images per batch when evaluating", parse=positive_int, runtime=True)
    log_every: int = option(50, "steps between progress-bar refreshes (each one syncs the device)",
                            parse=positive_int, runtime=True)
    tensorboard: bool = option(False, "also log to <out-dir>/tensorboard/ (pip install -e .[tensorboard])",
                               runtime=True)

    def __post_init__(self) -> None:
        if isinstance(self.compile, bool):  # checkpoints written when --compile was a switch
            self.compile = "default" if self.compile else "off"
        check_options(self)  # ranges and choices, as for the flags: saved settings are held to them too

    @property
    def memory_format(self) -> torch.memory_format:
        """How images and weights are laid out: NHWC unless --no-channels-last."""
        return torch.channels_last if self.channels_last else torch.contiguous_format


class NonFiniteLoss(TrainingError):
    """The training loss became NaN or infinite at `step` (1-based) of `epoch`."""

    def __init__(self, epoch: int, step: int):
        super().__init__(f"the loss became NaN or infinite at epoch {epoch}, step {step}")
        self.epoch, self.step = epoch, step


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam; on CUDA the fused kernel (one launch for all parameters instead of several per tensor)."""
    return torch.optim.Adam(model.parameters(), lr=lr, fused=next(model.parameters()).device.type == "cuda")


def load_training_data(settings: TrainConfig, device: torch.device) -> tuple[Tensors, Tensors]:
    """train.py's (images, labels) for training and for evaluation (the fixed binary test set with
    --binarize dynamic), moved to `device` once in the run's memory format: no per-step copies."""
    train = load_split(settings.data_dir, settings.dataset, "train", settings.download)
    test = evaluation_split(load_split(settings.data_dir, settings.dataset, "test", settings.download),
                            settings.binarize)
    fmt = settings.memory_format
    return ((train.images.to(device).contiguous(memory_format=fmt), train.labels.to(device)),
            (test.images.to(device).contiguous(memory_format=fmt), test.labels.to(device)))


def epoch_batches(data: Tensors, settings: TrainConfig, epoch: int) -> Iterator[Tensors]:
    """Epoch `epoch`'s batches, shuffled (and with --binarize dynamic drawn as binary images) from
    (seed, epoch) alone, so a resumed run sees exactly the batches of an uninterrupted one."""
    batches = iterate_batches(data, settings.batch_size, epoch_generator(settings.seed, epoch))
    if settings.binarize == "dynamic":
        batches = binarized(batches, binarization_generator(settings.seed, epoch, data[0].device))
    return batches


Step = Callable[[Batch], dict[str, torch.Tensor]]  # one optimisation step on a batch -> its loss terms


def eager_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: LossFn, amp: Amp) -> Step:
    """The plain step: forward (under `amp`), backward, Adam."""
    def step(batch: Batch) -> dict[str, torch.Tensor]:
        with amp():
            terms = loss_fn(model, batch)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        return terms
    return step


def make_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: LossFn, amp: Amp = contextlib.nullcontext,
              cuda_graph: bool = True) -> Step:
    """train.py's step: on CUDA with `cuda_graph` captured as a CUDA graph, elsewhere the plain step."""
    if cuda_graph and next(model.parameters()).device.type == "cuda":
        from common.cuda_graph import CudaGraphStep  # imported here: it builds on this module

        return CudaGraphStep(model, optimizer, loss_fn, amp)
    return eager_step(model, optimizer, loss_fn, amp)


def lr_at(step: int, total_steps: int, lr: float, schedule: str) -> float:
    """Learning rate of global step `step` (0-based) of `total_steps`: a pure function of the step, so
    a resumed run follows exactly the schedule of an uninterrupted one."""
    if schedule == "cosine":
        return 0.5 * lr * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    return lr


def train_one_epoch(model: nn.Module, batches: Iterable[Batch], optimizer: torch.optim.Optimizer, loss_fn: LossFn,
                    *, lr_for_step: Callable[[int], float] | None = None, amp: Amp = contextlib.nullcontext,
                    log_every: int = 50, check_stop: Callable[[], None] | None = None,
                    on_log: Callable[[int, dict[str, float]], None] | None = None, epoch: int = 0,
                    train_step: Step | None = None) -> dict[str, float]:
    """One pass over `batches`; returns the image-weighted mean of each loss term.

    Terms and the first non-finite step are kept on the device and read back only every `log_every`
    steps (.item() waits for the GPU), where NonFiniteLoss names that step and `on_log(step, means)`
    runs (and after the last step). `check_stop()` runs before every step and may raise.
    `train_step` (make_step's, kept across epochs) does the step; without it, the eager step.
    """
    model.train()
    step_fn = train_step if train_step is not None else eager_step(model, optimizer, loss_fn, amp)
    sums: dict[str, torch.Tensor] = {}
    first_bad: torch.Tensor | None = None  # 0-d long on the device: first non-finite step, 0 if none
    seen = 0
    for step, batch in enumerate(batches, start=1):
        if check_stop is not None:
            check_stop()
        if lr_for_step is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr_for_step(step - 1)
        terms = step_fn(batch)
        n = batch[0].shape[0]
        seen += n
        for name, value in terms.items():
            value = value.detach().float() * n
            sums[name] = sums[name] + value if name in sums else value
        bad_now = ~torch.isfinite(terms["loss"].detach())
        first_bad = bad_now.long() * step if first_bad is None else first_bad.masked_fill(
            bad_now & (first_bad == 0), step)
        if step % log_every == 0:
            if int(first_bad):  # one sync per refresh
                raise NonFiniteLoss(epoch, int(first_bad))
            if on_log is not None:
                on_log(step, {name: value.item() / seen for name, value in sums.items()})
    if first_bad is not None and int(first_bad):
        raise NonFiniteLoss(epoch, int(first_bad))
    means = {name: value.item() / seen for name, value in sums.items()}
    if on_log is not None and seen and step % log_every != 0:  # the last steps since a read-back
        on_log(step, means)
    return means


def evaluate(model: nn.Module, data: Batch, loss_fn: LossFn, batch_size: int = 1000, *,
             amp: Amp = contextlib.nullcontext, seed: int = 0) -> dict[str, float]:
    """Image-weighted mean loss terms over `data` = (images, labels) in eval mode, with fixed noise
    (the VAE's sampling): reproducible, and the training RNG stream is left untouched."""
    model.eval()
    x = data[0]
    sums: dict[str, torch.Tensor] = {}
    with fork_rng(x.device), torch.inference_mode():
        torch.manual_seed(seed)
        for batch in iterate_batches(data, batch_size):
            with amp():
                terms = loss_fn(model, batch)
            for name, value in terms.items():
                value = value.float() * batch[0].shape[0]
                sums[name] = sums[name] + value if name in sums else value
    return {name: value.item() / x.shape[0] for name, value in sums.items()}

"""The training step, the epoch and the evaluation: the algorithm, top to bottom.

A model's train.py supplies `loss_fn(model, (x, y)) -> {"loss": ..., other terms}`; "loss" is
minimised, every term is averaged over the epoch. Everything around the loop (resume, signals,
checkpoints) lives in common/trainer.py.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable

import torch
from torch import nn
from tqdm import tqdm

from common.data import iterate_batches
from common.device import fork_rng
from common.errors import TrainingError

Batch = tuple[torch.Tensor, torch.Tensor]  # images (N, C, H, W) in [0, 1], labels (N,)
LossFn = Callable[[nn.Module, Batch], dict[str, torch.Tensor]]
Amp = Callable[[], contextlib.AbstractContextManager]  # a fresh autocast context per use
LR_SCHEDULES = ("constant", "cosine")


class NonFiniteLoss(TrainingError):
    """The training loss became NaN or infinite at `step` (1-based) of `epoch`."""

    def __init__(self, epoch: int, step: int):
        super().__init__(f"the loss became NaN or infinite at epoch {epoch}, step {step}")
        self.epoch = epoch
        self.step = step


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam; on CUDA the fused kernel (one launch for all parameters instead of several per tensor)."""
    fused = next(model.parameters()).device.type == "cuda"
    return torch.optim.Adam(model.parameters(), lr=lr, fused=fused)


def lr_at(step: int, total_steps: int, lr: float, schedule: str) -> float:
    """Learning rate for global step `step` (0-based) of `total_steps`. A pure function of the
    step, so a resumed run follows exactly the schedule of an uninterrupted one."""
    if schedule == "cosine":
        return 0.5 * lr * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    return lr


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    *,
    lr_for_step: Callable[[int], float] | None = None,
    amp: Amp = contextlib.nullcontext,
    progress: tqdm | None = None,
    log_every: int = 50,
    check_stop: Callable[[], None] | None = None,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
    epoch: int = 0,
) -> dict[str, float]:
    """One pass over `batches`; returns the image-weighted mean of each loss term.

    Terms are accumulated on the device and read back only every `log_every` steps: reading a
    CUDA tensor (.item()) waits for all queued work, which would stall the GPU every step. For the
    same reason the first step whose loss is not finite is recorded on the device and checked at
    those read-backs; it raises NonFiniteLoss naming that exact step. `check_stop()` runs before
    every step and may raise to end the epoch between two steps (see trainer.stop_on_signals).
    `on_log(step, running means)` is called at the same read-backs (TensorBoard), never in between.
    """
    model.train()
    sums: dict[str, torch.Tensor] = {}
    first_bad: torch.Tensor | None = None  # 0-d long on the device: first non-finite step, 0 if none
    seen = 0
    for step, batch in enumerate(batches, start=1):
        if check_stop is not None:
            check_stop()
        if lr_for_step is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr_for_step(step - 1)
        with amp():
            terms = loss_fn(model, batch)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()

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
            if progress is not None:
                progress.set_postfix(loss=f"{sums['loss'].item() / seen:.2f}", refresh=False)
            if on_log is not None:
                on_log(step, {name: value.item() / seen for name, value in sums.items()})
        if progress is not None:
            progress.update(1)
    if first_bad is not None and int(first_bad):
        raise NonFiniteLoss(epoch, int(first_bad))
    return {name: value.item() / seen for name, value in sums.items()}


def evaluate(
    model: nn.Module,
    data: Batch,
    loss_fn: LossFn,
    batch_size: int = 1000,
    *,
    amp: Amp = contextlib.nullcontext,
    seed: int = 0,
) -> dict[str, float]:
    """Image-weighted mean loss terms over `data` = (images, labels), in eval mode, with fixed
    noise (the VAE's sampling) so the number is reproducible and the training RNG stream is left
    untouched."""
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

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


class CudaGraphStep:
    """The same step with its forward and backward captured once as a CUDA graph and replayed.

    At batch 128 this network's step is many small kernels, and on a GPU launching them
    takes longer than running them (the eager step reaches 5 % of an H200's fp32 peak). Replaying a
    captured graph launches them all at once. The first `warmup` steps run eagerly on a side stream
    (cuDNN and autograd set themselves up there, as capture requires); the next one is captured
    with its batch's shape, and every later batch of that shape is copied into the graph's input
    and replayed. Adam runs outside the graph, eagerly (its fused kernel is a single launch), so the
    learning rate can change every step and the optimizer's state and checkpoints are those of the
    eager step. A batch of another size (an epoch's last, smaller one) runs eagerly, its gradients
    written into the graph's own gradient tensors, which stay the parameters' `.grad` throughout.
    The arithmetic is the eager step's (tests/test_loop.py: the same parameters to 1e-4 after two
    epochs on a GPU, the VAE's noise included).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: LossFn, amp: Amp,
                 warmup: int = 3):
        self.model, self.optimizer, self.loss_fn, self.amp = model, optimizer, loss_fn, amp
        self.warmup = warmup
        self.eager_steps = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: Batch | None = None  # the graph's input tensors, refilled before each replay
        self.terms: dict[str, torch.Tensor] = {}  # the graph's outputs, overwritten by each replay
        self.side: torch.cuda.Stream | None = None  # the warm-up steps' stream

    def _forward_backward(self, batch: Batch) -> dict[str, torch.Tensor]:
        with self.amp():
            terms = self.loss_fn(self.model, batch)
        terms["loss"].backward()
        # detached: nothing keeps this step's autograd graph (and its per-stream gradient
        # accumulators) alive into the next step, which may run on another stream
        return {name: value.detach() for name, value in terms.items()}

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        if self.graph is None and self.eager_steps < self.warmup:
            self.eager_steps += 1
            main = torch.cuda.current_stream(batch[0].device)
            self.side = self.side or torch.cuda.Stream(batch[0].device)
            side = self.side
            side.wait_stream(main)
            with torch.cuda.stream(side):
                self.optimizer.zero_grad(set_to_none=True)
                terms = self._forward_backward(batch)
                self.optimizer.step()
            main.wait_stream(side)
            return terms
        if self.graph is None:
            self.inputs = (batch[0].clone(), batch[1].clone())
            self.optimizer.zero_grad(set_to_none=True)  # backward in the graph makes the .grad tensors
            self.graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(self.graph):
                    self.terms = self._forward_backward(self.inputs)
            except RuntimeError as err:  # e.g. a loss that reads a value back to the CPU while capturing
                reason = (str(err).strip().splitlines() or ["?"])[0]
                raise TrainingError(f"the training step could not be captured as a CUDA graph ({reason}); a loss "
                                    f"must not read values back to the CPU (.item(), an `if` on a tensor): "
                                    f"run with --no-cuda-graph") from None
        assert self.inputs is not None
        if batch[0].shape == self.inputs[0].shape and batch[1].shape == self.inputs[1].shape:
            self.inputs[0].copy_(batch[0])
            self.inputs[1].copy_(batch[1])
            self.graph.replay()
            self.optimizer.step()
            return self.terms
        self.optimizer.zero_grad(set_to_none=False)  # zeroed in place: .grad stays the graph's tensors
        terms = self._forward_backward(batch)
        self.optimizer.step()
        return terms


def make_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: LossFn, amp: Amp = contextlib.nullcontext,
              cuda_graph: bool = True) -> Step:
    """train.py's step: on CUDA with `cuda_graph`, CudaGraphStep; elsewhere the eager step."""
    on_cuda = next(model.parameters()).device.type == "cuda"
    return CudaGraphStep(model, optimizer, loss_fn, amp) if cuda_graph and on_cuda else eager_step(
        model, optimizer, loss_fn, amp)


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
    train_step: Step | None = None,
) -> dict[str, float]:
    """One pass over `batches`; returns the image-weighted mean of each loss term.

    Terms are accumulated on the device and read back only every `log_every` steps: reading a
    CUDA tensor (.item()) waits for all queued work, which would stall the GPU every step. For the
    same reason the first step whose loss is not finite is recorded on the device and checked at
    those read-backs; it raises NonFiniteLoss naming that exact step. `check_stop()` runs before
    every step and may raise to end the epoch between two steps (see trainer.stop_on_signals).
    `on_log(step, running means)` is called at the same read-backs (TensorBoard), never in between.
    `train_step` does the optimisation step (make_step; it keeps across epochs what it captures);
    without it, the eager step. The terms it returns are read before the next step.
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

"""The training step on CUDA, captured once as a CUDA graph and replayed (train.py --cuda-graph).

Elsewhere, or with --no-cuda-graph, train.py runs common/loop.py's plain step. Measured on one
H200: 106,050 images/s against a plain loop's 22,458 (docs/speed.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from common.errors import TrainingError

if TYPE_CHECKING:  # common.loop imports this module when it makes the step
    from common.loop import Amp, Batch, LossFn


class CudaGraphStep:
    """The step's forward and backward captured once as a CUDA graph and replayed: at batch 128 its
    many small kernels take longer to launch than to run.

    `warmup` eager steps on a side stream (as capture requires), then one captured; later batches of
    its shape are copied into the graph's inputs and replayed, others (an epoch's last) run eagerly
    into the graph's .grad tensors. Adam runs eagerly after it, so the learning rate may change every
    step. Same parameters as the eager step to 1e-4 after two epochs (tests/test_loop.py).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: LossFn, amp: Amp,
                 warmup: int = 3):
        self.model, self.optimizer, self.loss_fn, self.amp, self.warmup = model, optimizer, loss_fn, amp, warmup
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
            side = self.side = self.side or torch.cuda.Stream(batch[0].device)
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

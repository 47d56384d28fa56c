"""common/loop.py: the learning-rate schedule, the training step (eager, or a CUDA graph), the epoch."""

import contextlib
import math

import pytest
import torch

from common.cuda_graph import CudaGraphStep
from common.data import iterate_batches
from common.errors import TrainingError
from common.loop import lr_at, make_optimizer, make_step, train_one_epoch
from vanila_autoencoder import train as ae_train
from vanila_autoencoder.model import AEConfig, Autoencoder
from variational_autoencoder import train as vae_train
from variational_autoencoder.model import VAE, VAEConfig


def test_cosine_schedule_by_hand():
    assert lr_at(0, 100, 2e-3, "cosine") == pytest.approx(2e-3)
    assert lr_at(50, 100, 2e-3, "cosine") == pytest.approx(1e-3)  # cos(pi/2) = 0
    assert lr_at(25, 100, 2e-3, "cosine") == pytest.approx(1e-3 * (1 + math.cos(math.pi / 4)))
    assert lr_at(100, 100, 2e-3, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_at(70, 100, 2e-3, "constant") == 2e-3


# --- the training step: eager everywhere, a captured CUDA graph on CUDA (make_step) ---------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
BUILD = {"ae": (lambda: Autoencoder(AEConfig()), ae_train.loss_fn), "vae": (lambda: VAE(VAEConfig()), vae_train.loss_fn)}


def run_epochs(kind, device, graph, epochs=2, images=8 * 16 + 10, batch=16, amp=contextlib.nullcontext):
    """`epochs` epochs of 8 full batches and a last one of 10 with a learning rate changed every step;
    returns (the model's parameters and buffers after each epoch, each epoch's terms, the step)."""
    build, loss_fn = BUILD[kind]
    torch.manual_seed(0)
    x = torch.rand(images, 1, 28, 28, generator=torch.Generator().manual_seed(1)).to(device)
    y = torch.arange(images).remainder(10).to(device)
    model = build().to(device=device, memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, 1e-3)
    step = make_step(model, optimizer, loss_fn, amp, cuda_graph=graph)
    states, terms = [], []
    for epoch in range(epochs):
        terms.append(train_one_epoch(model, iterate_batches((x, y), batch, torch.Generator().manual_seed(epoch)),
                                     optimizer, loss_fn, amp=amp, lr_for_step=lambda i: 1e-3 / (1 + i),
                                     train_step=step, log_every=4))
        states.append({k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
    return states, terms, step


def test_make_step_is_the_eager_step_on_a_cpu():
    """On a CPU make_step is the plain step: the same parameters, bit for bit, as train_one_epoch's
    own step, which is the loop written out (zero_grad, backward, Adam)."""
    states, _, step = run_epochs("ae", "cpu", graph=True, epochs=1)
    assert not isinstance(step, CudaGraphStep)
    build, loss_fn = BUILD["ae"]
    torch.manual_seed(0)
    x = torch.rand(138, 1, 28, 28, generator=torch.Generator().manual_seed(1)).contiguous(
        memory_format=torch.channels_last)
    y = torch.arange(138).remainder(10)
    model = build().to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, 1e-3)
    model.train()
    for i, (bx, by) in enumerate(iterate_batches((x, y), 16, torch.Generator().manual_seed(0))):
        optimizer.param_groups[0]["lr"] = 1e-3 / (1 + i)
        loss = loss_fn(model, (bx, by))["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    for name, value in model.state_dict().items():
        assert torch.equal(value, states[0][name]), name


@needs_cuda
@pytest.mark.parametrize("kind", ["ae", "vae"])
def test_cuda_graph_step_trains_as_the_eager_step(kind):
    """Two epochs with the graph (3 eager warm-up steps, a capture, replays, the smaller last batch
    eagerly, then replays again in the second epoch) against the eager step: the same parameters,
    BatchNorm statistics and epoch losses. The VAE also draws its noise inside the graph."""
    torch.backends.cudnn.deterministic = True
    try:
        eager_states, eager_terms, _ = run_epochs(kind, "cuda", graph=False)
        graph_states, graph_terms, step = run_epochs(kind, "cuda", graph=True)
    finally:
        torch.backends.cudnn.deterministic = False
    assert isinstance(step, CudaGraphStep) and step.graph is not None and step.eager_steps == 3
    for epoch in range(2):
        for name, value in eager_states[epoch].items():
            other = graph_states[epoch][name]
            assert torch.allclose(value.float(), other.float(), rtol=1e-4, atol=1e-6), (
                f"epoch {epoch + 1}, {name}: max difference {(value.float() - other.float()).abs().max():.3g}")
        for name, value in eager_terms[epoch].items():
            assert graph_terms[epoch][name] == pytest.approx(value, rel=1e-5), name


@needs_cuda
def test_cuda_graph_step_under_bf16_autocast():
    """bf16 autocast inside the captured graph: the VAE's epoch losses as the eager step's, within
    bf16's rounding."""
    amp = lambda: torch.autocast("cuda", dtype=torch.bfloat16)  # noqa: E731
    _, eager_terms, _ = run_epochs("vae", "cuda", graph=False, amp=amp)
    _, graph_terms, step = run_epochs("vae", "cuda", graph=True, amp=amp)
    assert step.graph is not None
    for epoch in range(2):
        assert graph_terms[epoch]["loss"] == pytest.approx(eager_terms[epoch]["loss"], rel=1e-2)


def test_a_step_that_cannot_be_captured_is_one_line_naming_the_flag(monkeypatch):
    """A loss that syncs with the CPU fails inside the capture with CUDA's RuntimeError; the user
    gets a TrainingError (one line through exit_on_error) that names --no-cuda-graph. The capture
    is faked so that this runs without a GPU: only the error's path is under test here."""
    def syncing_loss(model, batch):
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore detail")

    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: object())
    monkeypatch.setattr(torch.cuda, "graph", lambda graph: contextlib.nullcontext())
    model = Autoencoder(AEConfig())
    step = CudaGraphStep(model, make_optimizer(model, 1e-3), syncing_loss, contextlib.nullcontext, warmup=0)
    x = torch.rand(4, 1, 28, 28)
    with pytest.raises(TrainingError) as caught:
        step((x, torch.zeros(4, dtype=torch.long)))
    assert str(caught.value) == (
        "the training step could not be captured as a CUDA graph (CUDA error: operation not permitted when stream "
        "is capturing); a loss must not read values back to the CPU (.item(), an `if` on a tensor): run with "
        "--no-cuda-graph")

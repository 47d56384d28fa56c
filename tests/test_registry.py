"""Adding a model = its folder + one registry line: a tiny third model, defined here with its own
train.py loop (a copy of the AE's), trains, checkpoints, reloads and plots through the shared code alone."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from common import registry
from common.checkpoint import load_model
from common.data import load_split
from common.latents import uniform_in_box
from common.loop import Batch, epoch_batches, evaluate, load_training_data, make_optimizer, make_step, train_one_epoch
from common.model_figures import PlotSpec, code_range_axes, plot_main
from common.options import option, positive_int
from common.run import Run, build_parser
from experiments.runs import plot_module, train_module
from variational_autoencoder.model import bernoulli_nll


@dataclass
class TinyConfig:
    latent_dim: int = option(3, "size of the code z", parse=positive_int)
    hidden: int = option(16, "hidden units", parse=positive_int)


class TinyModel(nn.Module):
    """An MLP autoencoder: nothing in common/ knows it."""

    def __init__(self, config: TinyConfig):
        super().__init__()
        self.config = config
        self.latent_dim = config.latent_dim
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, config.hidden), nn.ReLU(),
                                     nn.Linear(config.hidden, config.latent_dim))
        self.decoder = nn.Sequential(nn.Linear(config.latent_dim, 28 * 28), nn.Unflatten(1, (1, 28, 28)))

    # the shared interface: every method takes labels y, which this model ignores
    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder(x)

    def code(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.encode(x)

    def decode_logits(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(z)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z))


def tiny_loss(model: TinyModel, batch: Batch) -> dict[str, torch.Tensor]:
    x, y = batch
    return {"loss": bernoulli_nll(model.decode_logits(model.code(x)), x),
            "mean_label": y.float().mean()}  # proves the labels reach the loss function


def tiny_main(argv: list[str], out: Path) -> dict:
    """The tiny model's train.py main: the AE's, with its names."""
    args = build_parser("tiny", TinyConfig, out).parse_args(argv)
    with Run("tiny", TinyConfig, args, out, argv) as run:
        tc = run.train
        train_data, test_data = load_training_data(tc, run.device)
        torch.manual_seed(tc.seed)
        model = TinyModel(run.config).to(run.device, memory_format=tc.memory_format)
        optimizer = make_optimizer(model, tc.lr)
        run.restore(model, optimizer)
        step = make_step(model, optimizer, tiny_loss, run.amp, cuda_graph=tc.cuda_graph)
        for epoch in run.epochs(train_data, test_data, step):
            t0 = time.perf_counter()
            train_terms = train_one_epoch(model, epoch_batches(train_data, tc, epoch), optimizer, tiny_loss,
                                          train_step=step, lr_for_step=run.lr_for_step, epoch=epoch,
                                          log_every=tc.log_every, on_log=run.on_log, check_stop=run.check_stop)
            seconds = time.perf_counter() - t0
            test_terms = evaluate(model, test_data, tiny_loss, tc.eval_batch_size, amp=run.amp, seed=tc.seed)
            run.save(model, optimizer, train_terms, test_terms, seconds)
    return run.result


SPEC = PlotSpec(kind="tiny", name="Tiny", code_name="z", loss_terms=("loss",), prior_circles=False,
                manifold_axes=code_range_axes, manifold_label="the test codes' range",
                extra_samplers=(("box", uniform_in_box),))


def test_a_third_model_needs_only_its_registry_line(tmp_path, tiny_mnist, monkeypatch):
    monkeypatch.setitem(registry.MODELS, "tiny", registry.ModelEntry(__name__, "TinyModel", "TinyConfig",
                                                                     "a tiny test model"))
    out = tmp_path / "tiny"
    result = tiny_main(["--data-dir", str(tiny_mnist), "--no-download", "--device", "cpu", "--epochs", "2",
                        "--batch-size", "32", "--latent-dim", "2", "--hidden", "8"], out)
    history = result["history"]
    assert len(history) == 2 and history[1]["train_loss"] < history[0]["train_loss"]
    train_labels = load_split(tiny_mnist, "mnist", "train", download=False).labels.double()
    test_labels = load_split(tiny_mnist, "mnist", "test", download=False).labels.double()
    assert history[0]["train_mean_label"] == pytest.approx(train_labels.mean().item(), rel=1e-6)
    assert history[0]["test_mean_label"] == pytest.approx(test_labels.mean().item(), rel=1e-6)

    model = load_model(out / "checkpoints" / "last.pt")
    assert isinstance(model, TinyModel) and model.config == TinyConfig(latent_dim=2, hidden=8)
    assert model.decode(torch.zeros(1, 2)).shape == (1, 1, 28, 28)

    written = plot_main(SPEC, ["--out-dir", str(out), "--no-download"], out, "tiny")
    assert {p.name for p in written} == {"reconstructions.png", "latent_space.png", "loss_curves.png", "samples.png",
                                         "manifold.png", "interpolation.png", "latent_evolution.gif"}
    for path in written:
        with Image.open(path) as image:
            assert image.format == ("GIF" if path.suffix == ".gif" else "PNG")


def test_an_unregistered_kind_is_refused(tmp_path):
    from common.checkpoint import save_checkpoint
    from common.errors import CheckpointError

    save_checkpoint(tmp_path / "x.pt", {"kind": "tiny", "config": {}, "model": {}})
    with pytest.raises(CheckpointError, match="unknown model kind 'tiny'"):
        load_model(tmp_path / "x.pt")


def test_every_registered_model_has_the_shared_interface():
    for kind in registry.MODELS:
        model_cls, config_cls = registry.model_classes(kind)
        model = model_cls(config_cls())
        assert isinstance(model, registry.GenerativeModel), kind
        z = torch.zeros(3, model.latent_dim)
        assert model.decode(z).shape == (3, 1, 28, 28) and model.code(torch.zeros(3, 1, 28, 28)).shape == z.shape
        assert train_module(kind).main and plot_module(kind).main
    assert not isinstance(nn.Linear(2, 2), registry.GenerativeModel)

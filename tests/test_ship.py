"""experiments/ship.py and the shipped models in results/models/: weights only, small, and they
rebuild their models and draw the same figures as the run they came from."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.checkpoint import load_model
from experiments import ship
from vanila_autoencoder.model import Autoencoder
from variational_autoencoder import plot as vae_plot
from variational_autoencoder import train as vae_train
from variational_autoencoder.model import VAE

SHIPPED = Path(__file__).resolve().parent.parent / "results" / "models"
CLASSES = {"ae": Autoencoder, "vae": VAE, "cvae": VAE}


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_each_shipped_model_loads_weights_only_and_rebuilds(name):
    path = SHIPPED / f"{name}.pt"
    assert path.is_file(), f"{path} is missing: run python -m experiments.ship (see README)"
    assert path.stat().st_size <= ship.MAX_BYTES
    state = torch.load(path, weights_only=True)
    assert "optimizer" not in state and "rng" not in state
    assert state["epoch"] == len(state["history"]) == state["train"]["epochs"]
    model = load_model(path)
    assert type(model) is CLASSES[name] and model.conditional == (name == "cvae") if name != "ae" else True
    z = torch.zeros(3, model.latent_dim)
    images = model.decode(z, torch.tensor([0, 1, 2]))
    assert images.shape == (3, 1, 28, 28) and torch.isfinite(images).all()


def test_ship_writes_weights_only_and_plots_like_the_run(tmp_path, tiny_mnist):
    run = tmp_path / "run"
    vae_train.main(["--data-dir", str(tiny_mnist), "--out-dir", str(run), "--epochs", "2", "--batch-size", "32",
                    "--device", "cpu", "--no-download"])
    [shipped] = ship.main([str(run), "--out-dir", str(tmp_path / "models")])
    assert shipped == tmp_path / "models" / "run.pt"
    state = torch.load(shipped, weights_only=True)
    assert set(state) >= {"kind", "config", "model", "history", "latent_codes"} and "optimizer" not in state
    full = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.equal(state["model"][k], full["model"][k]) for k in full["model"])

    vae_plot.main(["--out-dir", str(tmp_path / "from_run"), "--checkpoint", str(run / "checkpoints" / "last.pt"),
                   "--no-download"])
    written = vae_plot.main(["--out-dir", str(tmp_path / "from_shipped"), "--checkpoint", str(shipped),
                             "--no-download"])
    for path in written:  # the same pixels, frame by frame for the GIF
        with Image.open(path) as a, Image.open(tmp_path / "from_run" / "figures" / path.name) as b:
            assert getattr(a, "n_frames", 1) == getattr(b, "n_frames", 1)
            for frame in range(getattr(a, "n_frames", 1)):
                a.seek(frame)
                b.seek(frame)
                assert np.array_equal(np.asarray(a.convert("RGBA")), np.asarray(b.convert("RGBA"))), path.name

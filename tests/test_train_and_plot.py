"""End to end on a tiny fixture dataset: train.py for one epoch, then plot.py, for each model."""

import json

import pytest
import torch
from PIL import Image

from common.checkpoint import load_model
from vanila_autoencoder import plot as ae_plot
from vanila_autoencoder import train as ae_train
from variational_autoencoder import plot as vae_plot
from variational_autoencoder import train as vae_train

FIGURES = ["reconstructions.png", "latent_space.png", "loss_curves.png", "samples.png", "manifold.png",
           "interpolation.png"]
FAST = ["--batch-size", "32", "--epochs", "1", "--device", "cpu", "--no-download"]


@pytest.mark.parametrize("train,plot,kind", [(ae_train, ae_plot, "ae"), (vae_train, vae_plot, "vae")])
def test_train_then_plot(tmp_path, tiny_mnist, train, plot, kind):
    out = tmp_path / "run"
    result = train.main(["--data-dir", str(tiny_mnist), "--out-dir", str(out), *FAST])
    ckpt = out / "checkpoints" / "last.pt"
    assert result["checkpoint"] == ckpt and ckpt.is_file()

    state = torch.load(ckpt, weights_only=True)
    assert state["kind"] == kind and state["epoch"] == 1 and len(state["history"]) == 1
    assert {"model", "optimizer", "config", "rng", "train"} <= set(state)
    history = json.loads((out / "history.json").read_text())
    assert history == state["history"]
    assert history[0]["test_loss"] > 0
    if kind == "vae":
        assert history[0]["test_neg_elbo"] == pytest.approx(history[0]["test_recon"] + history[0]["test_kl"])

    model = load_model(ckpt)
    x = torch.rand(2, 1, 28, 28)
    code = model.encode(x)
    z = code[0] if kind == "vae" else code
    assert z.shape == (2, 2) and model.decode(z).shape == (2, 1, 28, 28)

    written = plot.main(["--out-dir", str(out), "--no-download"])
    assert sorted(p.name for p in written) == sorted([*FIGURES, "latent_evolution.gif"])
    with Image.open(out / "figures" / "latent_evolution.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames == 1  # one frame per epoch
    for name in FIGURES:
        with Image.open(out / "figures" / name) as image:
            image.verify()
            assert image.format == "PNG"


def test_scripts_run_as_files_from_any_folder(tmp_path, tiny_mnist):
    """`python vanila_autoencoder/train.py` from the root and `python train.py` inside the folder."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(ae_train.__file__).resolve().parent.parent
    out = tmp_path / "run"
    cmd = [sys.executable, "train.py", "--data-dir", str(tiny_mnist), "--out-dir", str(out), *FAST]
    done = subprocess.run(cmd, cwd=root / "vanila_autoencoder", capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "epoch 1/1" in done.stdout
    help_run = subprocess.run([sys.executable, "variational_autoencoder/plot.py", "--help"], cwd=root,
                              capture_output=True, text=True, timeout=60)
    assert help_run.returncode == 0 and "--checkpoint" in help_run.stdout


def test_conditional_vae_trains_reloads_and_draws_its_grid(tmp_path, tiny_mnist):
    out = tmp_path / "cvae"
    vae_train.main(["--data-dir", str(tiny_mnist), "--out-dir", str(out), "--conditional", *FAST])
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["config"]["conditional"] is True
    model = load_model(out / "checkpoints" / "last.pt")
    assert model.conditional and model.decode(torch.zeros(3, 2), torch.tensor([0, 5, 9])).shape == (3, 1, 28, 28)
    written = {p.name for p in vae_plot.main(["--out-dir", str(out), "--no-download"])}
    assert "conditional_grid.png" in written and "manifold.png" not in written
    with Image.open(out / "figures" / "conditional_grid.png") as image:
        assert image.format == "PNG"


def test_tensorboard_flag_logs_every_term_a_sample_grid_and_the_projector(tmp_path, tiny_mnist):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    out = tmp_path / "run"
    vae_train.main(["--data-dir", str(tiny_mnist), "--out-dir", str(out), "--tensorboard", "--log-every", "1", *FAST])
    events = event_accumulator.EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    terms = {"loss", "recon", "kl", "neg_elbo"}
    assert set(events.Tags()["scalars"]) == {f"{split}/{t}" for split in ("train", "test") for t in terms}
    assert len(events.Scalars("train/loss")) == 3  # 96 images in batches of 32: read back at every step here
    assert events.Tags()["images"] == ["samples/prior"]
    assert (out / "tensorboard" / "projector_config.pbtxt").is_file()
    run = json.loads((out / "run.json").read_text())
    assert set(run["environment"]) >= {"python", "torch", "torchvision", "device_name", "torch_cpu_capability",
                                       "threads", "git"}

"""experiments/ship.py and the shipped models in results/models/: weights only, small, and they
rebuild their models and draw the same figures as the run they came from."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import one_line_exit
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



def test_the_shipped_binarized_model_is_the_recorded_run():
    """results/models/vae_binarized_d20.pt (shipped with --max-bytes 2000000) is the run whose
    history and run.json are committed in results/vae_binarized_d20/: same epochs and losses."""
    path = SHIPPED / "vae_binarized_d20.pt"
    assert path.is_file() and path.stat().st_size <= 2_000_000
    state = torch.load(path, weights_only=True)
    assert "optimizer" not in state and state["train"]["binarize"] == "dynamic"
    record = SHIPPED.parent / "vae_binarized_d20"
    history = json.loads((record / "history.json").read_text())
    assert state["epoch"] == len(history) == state["train"]["epochs"] == 34
    assert [h["test_loss"] for h in state["history"]] == [h["test_loss"] for h in history]
    assert json.loads((record / "run.json").read_text())["config"]["latent_dim"] == 20
    model = load_model(path)
    assert type(model) is VAE and model.latent_dim == 20 and not model.conditional
    # its likelihood.json (experiments.likelihood on this file): the -ELBO of its own draws agrees with
    # the one train.py recorded, the IWAE bound lies below it, and the README reports what the file says
    measured = json.loads((record / "likelihood.json").read_text())
    assert measured["checkpoint"] == "results/models/vae_binarized_d20.pt" and measured["binarize"] == "dynamic"
    assert (measured["iwae"]["k"], measured["iwae"]["images"], measured["epochs"]) == (1000, 10_000, 34)
    assert abs(measured["neg_elbo"] - history[-1]["test_neg_elbo"]) < 0.05
    assert measured["iwae"]["nll"] < measured["iwae"]["neg_elbo_same_draws"]
    readme = (SHIPPED.parent.parent / "README.md").read_text()
    assert f"**{measured['iwae']['nll']:.2f} ± {measured['iwae']['se']:.2f}** (k = 1000)" in readme

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


# ----------------------------------------------------------------------------------------------
# nothing replaced unasked, no two runs into one file

TINY = ["--epochs", "1", "--batch-size", "32", "--filters", "4,4,4,4", "--device", "cpu", "--no-download"]


def refused(argv):
    return one_line_exit(ship.main, argv)


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_an_existing_model_file_is_replaced_only_with_overwrite(tmp_path, tiny_mnist, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    (models / "vae.pt").write_bytes(b"the committed model")
    run = tmp_path / "vae"
    vae_train.main(["--data-dir", str(tiny_mnist), "--out-dir", str(run), *TINY])
    assert refused([str(run), "--out-dir", str(models)]) == \
        f"error: {models / 'vae.pt'} already exists: pass --overwrite to replace it, or use another --out-dir"
    assert files(models) == {"vae.pt": b"the committed model"}
    monkeypatch.chdir(SHIPPED.parent.parent)  # the default --out-dir, results/models, holds the committed vae.pt
    committed = (SHIPPED / "vae.pt").read_bytes()
    assert refused([str(run)]) == ("error: results/models/vae.pt already exists: pass --overwrite to replace it, or "
                                   "use another --out-dir")
    assert (SHIPPED / "vae.pt").read_bytes() == committed
    [written] = ship.main([str(run), "--out-dir", str(models), "--overwrite"])
    assert written == models / "vae.pt" and ship.shipped_from(written, run)


def test_two_runs_with_one_name_are_refused_and_nothing_is_written(tmp_path, tiny_mnist):
    for parent in ("a", "b"):
        vae_train.main(["--data-dir", str(tiny_mnist), "--out-dir", str(tmp_path / parent / "vae"), *TINY])
    models = tmp_path / "models"
    assert refused([str(tmp_path / "a" / "vae"), str(tmp_path / "b" / "vae"), "--out-dir", str(models)]) == (
        f"error: {tmp_path / 'a' / 'vae'} and {tmp_path / 'b' / 'vae'} would both be shipped to {models / 'vae.pt'}; "
        f"ship them into different --out-dir folders")
    assert not models.exists()
    # one folder named twice is shipped once; a run that cannot be read stops all before any write
    assert refused([str(tmp_path / "a" / "vae"), str(tmp_path / "nothing"), "--out-dir", str(models)]) == \
        f"error: checkpoint not found: {tmp_path / 'nothing' / 'checkpoints' / 'last.pt'}"
    assert not models.exists()
    written = ship.main([str(tmp_path / "a" / "vae"), str(tmp_path / "a" / ".." / "a" / "vae"), "--out-dir",
                         str(models)])
    assert written == [models / "vae.pt"]


def test_a_model_over_the_size_limit_replaces_nothing(tmp_path, tiny_mnist, monkeypatch):
    run = tmp_path / "vae"
    vae_train.main(["--data-dir", str(tiny_mnist), "--out-dir", str(run), *TINY])
    models = tmp_path / "models"
    models.mkdir()
    (models / "vae.pt").write_bytes(b"the committed model")
    monkeypatch.setattr(ship, "MAX_BYTES", 1000)
    message = refused([str(run), "--out-dir", str(models), "--overwrite"])
    assert message.startswith(f"error: {run}'s model would weigh ") and message.endswith(
        "more than 1,000: not shipped (--max-bytes)")
    assert files(models) == {"vae.pt": b"the committed model"}
    # --max-bytes lifts the limit: the run ships with its latent-code history when that fits, else without
    size = len(ship.shipped_state(run, max_bytes=10**9)[1])
    assert ship.main([str(run), "--out-dir", str(models), "--overwrite", "--max-bytes", str(size)]) == [models / "vae.pt"]
    assert (models / "vae.pt").stat().st_size == size and "latent_codes" in torch.load(models / "vae.pt")
    assert ship.main([str(run), "--out-dir", str(models), "--overwrite", "--max-bytes", str(size - 1)])
    assert (models / "vae.pt").stat().st_size < size and "latent_codes" not in torch.load(models / "vae.pt")

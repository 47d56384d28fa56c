"""common/latents.py: the codes of a fixed test subset after every epoch, and the GIF made from them."""

import numpy as np
import pytest
import torch
from PIL import Image

from common import latents as code_history
from common.errors import ProjectError
from variational_autoencoder import plot as vae_plot
from variational_autoencoder import train as vae_train

FAST = ["--batch-size", "32", "--device", "cpu", "--no-download"]


def test_subset_is_fixed_and_distinct():
    a, b = code_history.subset_indices(10_000), code_history.subset_indices(10_000)
    assert torch.equal(a, b) and len(a) == 2000 and len(set(a.tolist())) == 2000
    assert sorted(code_history.subset_indices(30).tolist()) == list(range(30))  # a small test set: all of it


def test_append_keeps_earlier_epochs_and_drops_later_ones(tmp_path):
    path = tmp_path / "latent_codes.npz"
    labels, idx = torch.arange(4) % 10, torch.arange(4)
    for epoch in (1, 2, 3):
        code_history.append_epoch(path, epoch, torch.full((4, 2), float(epoch)), labels, idx)
    h = code_history.read_code_history(path)
    assert h.epochs.tolist() == [1, 2, 3] and h.codes.shape == (3, 4, 2)
    assert h.codes[:, 0, 0].tolist() == [1.0, 2.0, 3.0]
    code_history.append_epoch(path, 2, torch.full((4, 2), 9.0), labels, idx)  # a run resumed after epoch 1
    h = code_history.read_code_history(path)
    assert h.epochs.tolist() == [1, 2] and h.codes[:, 0, 0].tolist() == [1.0, 9.0]
    code_history.append_epoch(path, 1, torch.zeros(4, 3), labels, idx)  # another latent size: replaced
    assert code_history.read_code_history(path).codes.shape == (1, 4, 3)
    with np.load(path, allow_pickle=False) as f:  # plain arrays only
        assert set(f.files) == {"epochs", "codes", "labels", "indices"}


def test_a_malformed_file_is_one_line_error(tmp_path):
    bad = tmp_path / "latent_codes.npz"
    bad.write_bytes(b"junk")
    with pytest.raises(ProjectError, match="cannot read the latent-code history"):
        code_history.read_code_history(bad)


def test_training_records_every_epoch_and_the_gif_has_one_frame_each(tmp_path, tiny_mnist):
    out = tmp_path / "run"
    vae_train.main(["--data-dir", str(tiny_mnist), "--out-dir", str(out), "--epochs", "2", *FAST])
    vae_train.main(["--out-dir", str(out), "--epochs", "3", "--resume"])
    h = code_history.read_code_history(out / code_history.FILE_NAME)
    assert h.epochs.tolist() == [1, 2, 3] and h.codes.shape == (3, 40, 2)  # the fixture has 40 test images
    vae_plot.main(["--out-dir", str(out), "--no-download"])
    with Image.open(out / "figures" / "latent_evolution.gif") as gif:
        assert gif.n_frames == 3
    assert not list((out / "figures").glob(".*"))  # no partial file left

"""experiments/runs.py: what each run of a multi-run program needs."""

import dataclasses

import pytest

from common.checkpoint import save_checkpoint
from common.errors import CheckpointError, TrainingError
from experiments.runs import train_flags
from variational_autoencoder.model import VAE, VAEConfig


def test_train_flags_start_finish_skip_or_refuse_a_run(tmp_path):
    ckpt = tmp_path / "checkpoints" / "last.pt"
    assert train_flags(ckpt, 3, "vae") == []  # nothing there: start
    assert train_flags(ckpt, 3, "vae", overwrite=True) == ["--overwrite"]
    config = VAEConfig(filters=(4, 4, 4, 4))
    save_checkpoint(ckpt, {"kind": "vae", "config": dataclasses.asdict(config), "model": VAE(config).state_dict(),
                           "epoch": 2})
    assert train_flags(ckpt, 3, "vae") == ["--resume"]  # 2 of 3 epochs: finish it
    assert train_flags(ckpt, 2, "vae") is None  # done
    with pytest.raises(TrainingError, match="has 2 epochs, more than --epochs 1"):
        train_flags(ckpt, 1, "vae")
    with pytest.raises(CheckpointError, match="not an autoencoder"):
        train_flags(ckpt, 2, "ae")


def test_a_run_with_other_settings_is_refused_not_reused(tmp_path):
    ckpt = tmp_path / "checkpoints" / "last.pt"
    config = VAEConfig(filters=(4, 4, 4, 4))
    save_checkpoint(ckpt, {"kind": "vae", "config": dataclasses.asdict(config), "model": VAE(config).state_dict(),
                           "epoch": 2, "train": {"seed": 0}})
    assert train_flags(ckpt, 2, "vae", expected={"seed": 0, "conditional": False}) is None
    with pytest.raises(TrainingError, match="was trained with seed 0, not 1: pass --overwrite"):
        train_flags(ckpt, 2, "vae", expected={"seed": 1})
    with pytest.raises(TrainingError, match="was trained with conditional False, not True"):
        train_flags(ckpt, 2, "vae", expected={"conditional": True})
    assert train_flags(ckpt, 2, "vae", overwrite=True, expected={"seed": 1}) == ["--overwrite"]


def test_default_settings_are_what_a_plain_train_py_run_records(tmp_path, tiny_mnist):
    """A run trained with train.py's defaults (and the flags given) matches default_settings
    exactly; one flag more, and train_flags names it."""
    from experiments.runs import default_settings
    from variational_autoencoder import train as vae_train

    out = tmp_path / "run"
    vae_train.main(["--data-dir", str(tiny_mnist), "--out-dir", str(out), "--epochs", "1", "--device", "cpu",
                    "--no-download", "--batch-size", "32", "--lr", "0.01"])
    ckpt = out / "checkpoints" / "last.pt"
    expected = default_settings("vae", batch_size=32, lr=0.01)
    assert expected["filters"] == (32, 64, 64, 64) and "device" not in expected and "out_dir" not in expected
    assert train_flags(ckpt, 1, "vae", expected=expected) is None
    with pytest.raises(TrainingError, match="was trained with lr 0.01, not 0.002"):
        train_flags(ckpt, 1, "vae", expected=default_settings("vae", batch_size=32))
    with pytest.raises(ValueError, match="not a setting of train.py: learning_rate"):
        default_settings("vae", learning_rate=0.1)

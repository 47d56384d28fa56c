"""Checkpoint round trips and load_model."""

import dataclasses

import pytest
import torch

from common.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from variational_autoencoder.model import VAE, VAEConfig
from vanila_autoencoder.model import AEConfig, Autoencoder


def _save(model, path, kind):
    save_checkpoint(path, {"kind": kind, "config": dataclasses.asdict(model.config), "model": model.state_dict()})


@pytest.mark.parametrize("kind,cls,config", [
    ("ae", Autoencoder, AEConfig(latent_dim=3, filters=(8, 16, 16, 16))),
    ("vae", VAE, VAEConfig(latent_dim=4, strides=(1, 2, 2, 2))),
])
def test_round_trip_gives_identical_outputs(tmp_path, kind, cls, config):
    torch.manual_seed(0)
    model = cls(config)
    # move the BatchNorm running statistics away from their initial values
    model.train()
    model(torch.rand(16, 1, 28, 28))
    model.eval()
    path = tmp_path / "m.pt"
    _save(model, path, kind)
    loaded = load_model(path)
    assert type(loaded) is cls and not loaded.training
    assert loaded.config == config
    x = torch.rand(5, 1, 28, 28)
    z = torch.randn(5, config.latent_dim)
    with torch.no_grad():
        assert torch.equal(loaded.decode(z), model.decode(z))
        enc_a, enc_b = loaded.encode(x), model.encode(x)
    for a, b in zip(enc_a if isinstance(enc_a, tuple) else (enc_a,), enc_b if isinstance(enc_b, tuple) else (enc_b,)):
        assert torch.equal(a, b)


def test_checkpoint_loads_with_weights_only(tmp_path):
    path = tmp_path / "m.pt"
    _save(Autoencoder(AEConfig()), path, "ae")
    state = torch.load(path, weights_only=True)
    assert state["kind"] == "ae" and state["config"]["filters"] == (32, 64, 64, 64)


def test_wrong_kind_is_refused(tmp_path):
    path = tmp_path / "m.pt"
    _save(Autoencoder(AEConfig()), path, "ae")
    with pytest.raises(CheckpointError, match="not a variational"):
        load_checkpoint(path, kind="vae")


def test_missing_and_garbage_files_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "absent.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"hello, not a checkpoint")
    with pytest.raises(CheckpointError):
        load_model(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not a checkpoint of this project"):
        load_model(other)


def test_truncated_checkpoint_is_refused(tmp_path):
    path = tmp_path / "m.pt"
    _save(VAE(VAEConfig()), path, "vae")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_model(path)


def test_save_replaces_atomically_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "ckpt" / "last.pt"
    save_checkpoint(path, {"kind": "ae", "config": {}, "model": {}, "epoch": 1})
    save_checkpoint(path, {"kind": "ae", "config": {}, "model": {}, "epoch": 2})
    assert torch.load(path, weights_only=True)["epoch"] == 2
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]

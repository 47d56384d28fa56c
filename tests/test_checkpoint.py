"""Checkpoint round trips and load_model."""

import dataclasses

import pytest
import torch

from common.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from common.errors import DeviceError
from vanila_autoencoder.model import AEConfig, Autoencoder
from variational_autoencoder.model import VAE, VAEConfig


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


# ----------------------------------------------------------------------------------------------
# checkpoints are validated, not trusted: each failure is one line naming the field or tensor


SMALL = AEConfig(filters=(4, 4, 4, 4))


def _state(**changes):
    """A small AE checkpoint as train.py writes it, with `changes` applied."""
    from common.loop import TrainConfig

    torch.manual_seed(0)
    state = {"kind": "ae", "config": dataclasses.asdict(SMALL), "model": Autoencoder(SMALL).state_dict(),
             "epoch": 1, "history": [{"epoch": 1, "train_loss": 2.0, "test_loss": 1.5}],
             "train": dataclasses.asdict(TrainConfig())}
    return {**state, **changes}


def _refused(tmp_path, state, match, save=torch.save):
    path = tmp_path / "m.pt"
    save(state, path)
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    message = str(err.value)
    assert "\n" not in message and len(message) < 400, message
    assert match in message, message
    return message


def test_a_valid_checkpoint_passes_every_check(tmp_path):
    path = tmp_path / "m.pt"
    torch.save(_state(), path)
    assert load_model(path).config == SMALL


def test_nan_weights_are_refused_naming_the_first_tensor(tmp_path):
    weights = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
               for k, v in _state()["model"].items()}
    _refused(tmp_path, _state(model=weights), "weight encoder.convs.0.0.weight holds NaN or infinite values")


def test_one_infinite_weight_is_refused_naming_it(tmp_path):
    weights = dict(_state()["model"])
    weights["decoder.fc.bias"] = weights["decoder.fc.bias"].clone()
    weights["decoder.fc.bias"][3] = float("inf")
    _refused(tmp_path, _state(model=weights), "weight decoder.fc.bias holds NaN or infinite values")


def test_weights_that_do_not_fit_the_config_name_the_tensor(tmp_path):
    config = dataclasses.asdict(SMALL) | {"latent_dim": 3}
    _refused(tmp_path, _state(config=config),
             "weight fc_z.weight has shape (2, 196), but the config's model needs (3, 196)")
    weights = dict(_state()["model"])
    del weights["fc_z.bias"]
    _refused(tmp_path, _state(model=weights), "weight fc_z.bias is missing")
    _refused(tmp_path, _state(model={**weights, "fc_z.bias": torch.zeros(2), "extra": torch.zeros(1)}),
             "weight 'extra' is not one the config's model has")
    _refused(tmp_path, _state(model={**weights, "fc_z.bias": [0.0, 0.0]}), "weight fc_z.bias is a list, not a tensor")


def test_absurd_sizes_are_refused_before_anything_is_allocated(tmp_path):
    import resource
    import time

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    _refused(tmp_path, _state(config=dataclasses.asdict(SMALL) | {"latent_dim": 10**9}),
             "invalid config: latent_dim must be an integer from 1 to 1024, got 1000000000")
    _refused(tmp_path, _state(config=dataclasses.asdict(SMALL) | {"latent_dim": 1024, "filters": (4096,) * 4}),
             "the network would have about")
    assert time.perf_counter() - t0 < 10
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000  # KiB: nothing near the 4 GB asked


def test_another_image_size_or_channel_count_is_refused(tmp_path):
    _refused(tmp_path, _state(config=dataclasses.asdict(SMALL) | {"image_size": 32}),
             "is for 1-channel 32x32 images; the data here is 1-channel 28x28 (MNIST)")
    _refused(tmp_path, _state(config=dataclasses.asdict(SMALL) | {"image_channels": 3}), "is for 3-channel 28x28")


@pytest.mark.parametrize("history,match", [
    ("not a list", "its history is a str, not a list"),
    ([1.0], "history entry 0 is not a dict of named numbers with an epoch"),
    ([{"epoch": 1, "test_loss": "low"}], "history entry 0 is not a dict"),
    ([{"test_loss": 1.0}], "history entry 0 is not a dict"),
    ([{"epoch": 1}, {"epoch": 2}], "it has 1 epochs but 2 history entries"),
])
def test_a_malformed_history_is_refused(tmp_path, history, match):
    _refused(tmp_path, _state(history=history), match)


@pytest.mark.parametrize("changes,match", [
    ({"batch_size": 0}, "invalid training settings: batch_size must be an integer from 1 to 1000000, got 0"),
    ({"batch_size": -128}, "batch_size must be an integer from 1 to 1000000, got -128"),
    ({"epochs": 10**12}, "epochs must be an integer from 1 to 10000"),
    ({"dataset": "cifar10"}, "dataset must be one of mnist, fashion-mnist"),
    ({"lr": -1.0}, "lr must be a finite number > 0"),
])
def test_odd_training_settings_are_refused(tmp_path, changes, match):
    _refused(tmp_path, _state(train=_state()["train"] | changes), match)


def test_odd_fields_are_refused(tmp_path):
    _refused(tmp_path, _state(epoch=-1), "epoch must be an integer from 0 to 10000")
    _refused(tmp_path, _state(train="fast"), "its training settings are not a dict")
    _refused(tmp_path, _state(format_version=True), "format version True")


def test_a_view_claiming_more_elements_than_it_stores_is_refused(tmp_path):
    _refused(tmp_path, _state(optimizer={"state": {0: {"exp_avg": torch.zeros(1).expand(10**9)}}}),
             "tensor optimizer.state.0.exp_avg claims more elements than it stores")


def test_compressed_archives_and_the_legacy_format_are_refused(tmp_path):
    import zipfile

    plain = tmp_path / "plain.pt"
    torch.save(_state(), plain)
    packed = tmp_path / "packed.pt"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    with pytest.raises(CheckpointError, match="holds a compressed entry"):
        load_model(packed)
    _refused(tmp_path, _state(), "legacy (pre-1.6) format",
             save=lambda obj, path: torch.save(obj, path, _use_new_zipfile_serialization=False))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_loading_onto_a_missing_device_says_so(tmp_path):
    path = tmp_path / "m.pt"
    torch.save(_state(), path)
    with pytest.raises(DeviceError, match="device 'cuda' requested but CUDA is not available"):
        load_model(path, map_location="cuda")
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        load_model(path, map_location="tpu")


def _with_pickle(path, pickled: bytes):
    """A torch.save archive whose pickle is replaced by `pickled` (hand-made: no pickler writes these)."""
    import zipfile

    torch.save({}, path)
    with zipfile.ZipFile(path) as src:
        entries = [(info, src.read(info)) for info in src.infolist()]
    with zipfile.ZipFile(path, "w") as dst:
        for info, data in entries:
            dst.writestr(info, pickled if info.filename.endswith("/data.pkl") else data)
    return path


def _text(s: str) -> bytes:
    return b"X" + len(s.encode()).to_bytes(4, "little") + s.encode()  # BINUNICODE


@pytest.mark.parametrize("latent_dim,shown", [
    (b"]" * 100_000 + b"a" * 99_999, "[[[...]]]"),  # a list nested 100,000 deep
    (b"]q\x00h\x00a", "[[[...]]]"),  # a list that contains itself
], ids=["nested-100000-deep", "contains-itself"])
def test_values_nested_without_end_are_one_short_line(tmp_path, latent_dim, shown):
    pickled = (b"\x80\x02}(" + _text("kind") + _text("ae") + _text("model") + b"}" + _text("config") + b"}("
               + _text("latent_dim") + latent_dim + b"uu.")
    path = _with_pickle(tmp_path / "m.pt", pickled)
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    assert str(err.value) == f"{path} has an invalid config: latent_dim must be an integer from 1 to 1024, got {shown}"

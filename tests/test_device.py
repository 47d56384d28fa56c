"""common/device.py: device selection (with mocks: no GPU needed), the precision policy, and an
unavailable device reported as one line by every script."""

import importlib

import pytest
import torch

from common import device as dev
from common.checkpoint import save_checkpoint
from common.errors import DeviceError
from variational_autoencoder.model import VAE, VAEConfig


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert dev.get_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dev.get_device("auto").type == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert dev.get_device("auto").type == "cpu"


def test_explicit_device_must_exist(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="CUDA is not available"):
        dev.get_device("cuda")
    with pytest.raises(DeviceError, match="MPS is not available"):
        dev.get_device("mps")
    with pytest.raises(DeviceError, match="unknown device"):
        dev.get_device("tpu")
    assert dev.get_device("cpu").type == "cpu"


def test_auto_precision_follows_the_hardware(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert dev.resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert dev.resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert dev.resolve_precision("auto", torch.device("cuda")) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert dev.resolve_precision("auto", torch.device("cuda")) == "fp32"
    assert dev.resolve_precision("fp32", cpu) == "fp32"
    assert dev.resolve_precision("auto", torch.device("mps")) == "fp32"
    with pytest.raises(DeviceError):
        dev.resolve_precision("fp16", cpu)


def test_bf16_autocast_runs_convolutions_in_bf16_and_losses_stay_fp32():
    model = VAE(VAEConfig())
    x = torch.rand(2, 1, 28, 28)
    with dev.autocast(torch.device("cpu"), "bf16"):
        out = model(x)
    assert out.logits.dtype == torch.bfloat16
    with dev.autocast(torch.device("cpu"), "fp32"):
        assert model(x).logits.dtype == torch.float32


@pytest.mark.parametrize("module,argv", [
    ("experiments.bench", []),
    ("vanila_autoencoder.train", ["--epochs", "1"]),
    ("variational_autoencoder.plot", []),
    ("experiments.compare", ["--ae", "ae.pt", "--vae", "vae.pt"]),
    ("experiments.latent_study", ["--latent-dims", "2"]),
])
def test_an_unavailable_device_is_one_line_error_in_every_script(module, argv, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    for kind in ("ae", "vae"):  # checkpoints for the scripts that read one before choosing the device
        save_checkpoint(tmp_path / f"{kind}.pt", {"kind": kind, "config": {}, "model": {}})
    ckpt = ["--checkpoint", "vae.pt"] if module.endswith("plot") else []
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(module).main([*argv, *ckpt, "--device", "cuda"])
    assert str(exit_info.value.code) == "error: device 'cuda' requested but CUDA is not available"

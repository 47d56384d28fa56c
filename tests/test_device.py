"""common/device.py: device selection (with mocks: no GPU needed), the precision policy, and an
unavailable device reported as one line by every script."""

import importlib

import pytest
import torch

from common import device as dev
from common.checkpoint import save_checkpoint
from common.errors import DeviceError
from variational_autoencoder.model import VAE, VAEConfig


def mock_accelerator(monkeypatch, kind):
    """Pretend this machine's accelerator (through torch.accelerator) is `kind`, or that it has none."""
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: kind is not None)
    monkeypatch.setattr(torch.accelerator, "current_accelerator",
                        lambda check_available=False: None if kind is None else torch.device(kind))


def test_auto_picks_the_accelerator_else_cpu(monkeypatch):
    for kind in ("cuda", "mps"):
        mock_accelerator(monkeypatch, kind)
        assert dev.get_device("auto").type == kind
    mock_accelerator(monkeypatch, None)
    assert dev.get_device("auto").type == "cpu"


def test_explicit_device_must_exist(monkeypatch):
    mock_accelerator(monkeypatch, None)
    with pytest.raises(DeviceError, match="CUDA is not available"):
        dev.get_device("cuda")
    with pytest.raises(DeviceError, match="MPS is not available"):
        dev.get_device("mps")
    with pytest.raises(DeviceError, match="unknown device"):
        dev.get_device("tpu")
    assert dev.get_device("cpu").type == "cpu"
    mock_accelerator(monkeypatch, "mps")  # a Mac: CUDA is still refused
    with pytest.raises(DeviceError, match="CUDA is not available"):
        dev.get_device("cuda")
    assert dev.get_device("mps").type == "mps"


class FakeDeviceModule:
    """Stands in for torch.mps: a random state that code inside the fork may change."""

    def __init__(self):
        self.state = torch.tensor([7], dtype=torch.uint8)
        self.calls = []

    def get_rng_state(self, device=None):
        self.calls.append("get")
        return self.state.clone()

    def set_rng_state(self, state, device=None):
        self.calls.append("set")
        self.state = state.clone()

    def device_count(self):
        return 1

    def _is_in_bad_fork(self):
        return False

    def manual_seed(self, seed):
        self.state = torch.tensor([seed % 256], dtype=torch.uint8)


def test_evaluation_forks_the_accelerators_random_stream(monkeypatch):
    fake = FakeDeviceModule()
    monkeypatch.setattr(torch, "mps", fake)
    monkeypatch.setattr(torch, "get_device_module", lambda kind=None: fake)
    cpu_before = torch.get_rng_state()
    with dev.fork_rng(torch.device("mps")):
        torch.manual_seed(123)  # as evaluation does: reseeds the CPU and the device
        assert fake.state.item() == 123
    assert fake.state.item() == 7 and fake.calls[0] == "get" and fake.calls[-1] == "set"
    assert torch.equal(torch.get_rng_state(), cpu_before)
    # and the resume state carries that device's stream
    saved = dev.rng_state(torch.device("mps"))
    assert saved["device_type"] == "mps" and saved["device"].item() == 7
    fake.state = torch.tensor([1], dtype=torch.uint8)
    dev.set_rng_state(saved, torch.device("mps"))
    assert fake.state.item() == 7


def test_auto_precision_follows_the_hardware(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
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
    mock_accelerator(monkeypatch, None)
    monkeypatch.chdir(tmp_path)
    for kind in ("ae", "vae"):  # checkpoints for the scripts that read one before choosing the device
        save_checkpoint(tmp_path / f"{kind}.pt", {"kind": kind, "config": {}, "model": {}})
    ckpt = ["--checkpoint", "vae.pt"] if module.endswith("plot") else []
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(module).main([*argv, *ckpt, "--device", "cuda"])
    assert str(exit_info.value.code) == "error: device 'cuda' requested but CUDA is not available"


def test_a_cpu_capped_to_avx2_trains_in_fp32(monkeypatch):
    """ONEDNN_MAX_CPU_ISA=AVX2 or ATEN_CPU_CAPABILITY=avx2 on an AVX-512 BF16 CPU: bf16 would be emulated."""
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert dev.resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert dev.resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert dev.resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")  # ATEN_CPU_CAPABILITY=avx2
    assert dev.resolve_precision("auto", cpu) == "fp32"
    assert dev.resolve_precision("bf16", cpu) == "bf16"  # asked for explicitly: given

"""Device selection (with mocks: no GPU needed), precision policy, the LR schedule, the fast
inference layout, and smoke runs of the benchmark and the one-command reproduction."""

import json
import math

import pytest
import torch
from PIL import Image

from common import device as dev
from common.inference import decode_codes, for_inference
from common.training import lr_at
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
    with pytest.raises(ValueError, match="CUDA is not available"):
        dev.get_device("cuda")
    with pytest.raises(ValueError, match="MPS is not available"):
        dev.get_device("mps")
    with pytest.raises(ValueError, match="unknown device"):
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
    with pytest.raises(ValueError):
        dev.resolve_precision("fp16", cpu)


def test_bf16_autocast_runs_convolutions_in_bf16_and_losses_stay_fp32():
    model = VAE(VAEConfig())
    x = torch.rand(2, 1, 28, 28)
    with dev.autocast(torch.device("cpu"), "bf16"):
        out = model(x)
    assert out.logits.dtype == torch.bfloat16
    with dev.autocast(torch.device("cpu"), "fp32"):
        assert model(x).logits.dtype == torch.float32


def test_cosine_schedule_by_hand():
    assert lr_at(0, 100, 2e-3, "cosine") == pytest.approx(2e-3)
    assert lr_at(50, 100, 2e-3, "cosine") == pytest.approx(1e-3)  # cos(pi/2) = 0
    assert lr_at(25, 100, 2e-3, "cosine") == pytest.approx(1e-3 * (1 + math.cos(math.pi / 4)))
    assert lr_at(100, 100, 2e-3, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_at(70, 100, 2e-3, "constant") == 2e-3


def test_channels_last_inference_matches_the_plain_layout():
    torch.manual_seed(0)
    model = VAE(VAEConfig()).eval()
    z = torch.randn(8, 2)
    expected = decode_codes(model, z)
    fast = for_inference(model)
    assert fast.decoder.fc.weight.is_contiguous()  # dense layers are unaffected
    assert next(m for m in fast.modules() if isinstance(m, torch.nn.ConvTranspose2d)).weight.is_contiguous(
        memory_format=torch.channels_last)
    assert torch.allclose(decode_codes(fast, z), expected, atol=1e-5)


def test_benchmark_runs_and_reports_both_paths():
    from common import bench

    results = bench.main(["--device", "cpu", "--steps", "1", "--warmup", "1", "--rounds", "1",
                          "--eval-images", "64", "--batch-size", "16"])
    assert set(results) == {"ae", "vae"}
    for r in results.values():
        assert r["reference_img_s"] > 0 and r["default_img_s"] > 0
        assert r["speedup"] == pytest.approx(r["default_img_s"] / r["reference_img_s"])


def test_reproduce_runs_every_stage_then_skips_trained_models(tmp_path, tiny_mnist, capsys):
    from common import reproduce

    out = tmp_path / "results"
    argv = ["--data-dir", str(tiny_mnist), "--out-dir", str(out), "--epochs", "1", "--device", "cpu",
            "--iwae-k", "2", "--iwae-images", "4", "--no-download", "--parallel"]
    timings = reproduce.main(argv)
    assert {"train ae + vae (in parallel)", "plot ae", "plot vae", "compare", "total"} <= set(timings)
    for name in ("ae", "vae"):
        assert torch.load(out / name / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
        for figure in ("reconstructions", "latent_space", "loss_curves", "samples", "manifold", "interpolation"):
            with Image.open(out / name / "figures" / f"{figure}.png") as image:
                assert image.format == "PNG"
    metrics = json.loads((out / "compare" / "metrics.json").read_text())
    assert metrics["settings"]["iwae_k"] == 2
    assert "| stage | seconds |" in capsys.readouterr().out
    again = reproduce.main(argv)  # already trained: training is skipped, the rest runs again
    assert not any(stage.startswith("train") for stage in again)


@pytest.mark.parametrize("module,argv", [
    ("common.bench", []),
    ("vanila_autoencoder.train", ["--epochs", "1"]),
    ("variational_autoencoder.plot", []),
    ("common.compare", ["--ae", "ae.pt", "--vae", "vae.pt"]),
    ("variational_autoencoder.latent_study", ["--latent-dims", "2"]),
])
def test_an_unavailable_device_is_one_line_error_in_every_script(module, argv, monkeypatch, tmp_path):
    import importlib

    from common.checkpoint import save_checkpoint

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    for kind in ("ae", "vae"):  # checkpoints for the scripts that read one before choosing the device
        save_checkpoint(tmp_path / f"{kind}.pt", {"kind": kind, "config": {}, "model": {}})
    ckpt = ["--checkpoint", "vae.pt"] if module.endswith("plot") else []
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(module).main([*argv, *ckpt, "--device", "cuda"])
    assert str(exit_info.value.code) == "error: device 'cuda' requested but CUDA is not available"

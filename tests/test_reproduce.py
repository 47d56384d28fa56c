"""experiments/reproduce.py: every stage runs, then trained models are skipped."""

import json

import torch
from PIL import Image

from experiments import reproduce


def test_reproduce_runs_every_stage_then_skips_trained_models(tmp_path, tiny_mnist, capsys):
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

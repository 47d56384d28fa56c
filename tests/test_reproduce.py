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
    assert {"train ae + vae + cvae (at once)", "plot ae", "plot vae", "plot cvae", "compare", "ship",
            "total"} <= set(timings)
    for name in ("ae", "vae", "cvae"):
        assert torch.load(out / name / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
        last = "conditional_grid" if name == "cvae" else "manifold"
        for figure in ("reconstructions", "latent_space", "loss_curves", "samples", last, "interpolation"):
            with Image.open(out / name / "figures" / f"{figure}.png") as image:
                assert image.format == "PNG"
    metrics = json.loads((out / "compare" / "metrics.json").read_text())
    assert metrics["settings"]["iwae_k"] == 2 and set(metrics["models"]) == {"ae", "vae", "cvae"}
    assert sorted(p.name for p in (out / "models").iterdir()) == ["ae.pt", "cvae.pt", "vae.pt"]
    assert "| stage | seconds |" in capsys.readouterr().out
    again = reproduce.main(argv)  # already trained: training is skipped, the rest runs again
    assert not any(stage.startswith("train") for stage in again)

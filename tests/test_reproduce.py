"""experiments/reproduce.py: every stage runs, then trained models are skipped."""

import json
import os

import pytest
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
    shipped = {p.name: p.read_bytes() for p in (out / "models").iterdir()}
    compared = (out / "compare" / "metrics.json").read_bytes()
    again = reproduce.main(argv)  # already trained: training is skipped, the plots drawn again
    assert not any(stage.startswith("train") for stage in again) and "plot ae" in again
    # the comparison and the shipped models are what this run would write: kept, not made again
    assert "compare" not in again and "ship" not in again
    printed = capsys.readouterr().out
    assert "already compares these models with these settings, kept" in printed
    assert printed.count("already holds") == 3
    assert {p.name: p.read_bytes() for p in (out / "models").iterdir()} == shipped
    assert (out / "compare" / "metrics.json").read_bytes() == compared

    # another comparison, or a shipped file that is not this run's model, is refused before anything runs
    with pytest.raises(SystemExit) as refused:
        reproduce.main([*argv[:argv.index("--iwae-k")], "--iwae-k", "3", *argv[argv.index("--iwae-k") + 2:]])
    assert refused.value.code == (f"error: {out / 'compare' / 'metrics.json'} holds another comparison (iwae_k 2, "
                                  f"not 3) and no model was retrained: pass --overwrite to redo the run, or use "
                                  f"another --out-dir")
    (out / "models" / "ae.pt").write_bytes(shipped["vae.pt"])
    with pytest.raises(SystemExit) as refused:
        reproduce.main(argv)
    assert refused.value.code == (f"error: {out / 'models' / 'ae.pt'} does not hold {out / 'ae'}'s model and ae is "
                                  f"not retrained: pass --overwrite to redo the run, or use another --out-dir")
    assert (out / "models" / "ae.pt").read_bytes() == shipped["vae.pt"]
    assert "=== plot" not in capsys.readouterr().out


def test_reproduce_without_the_cvae_trains_the_same_two_models(tmp_path, tiny_mnist):
    """--no-cvae: the AE and the VAE alone, trained with the thread count of the full run (a third
    of the cores, at least one), compared without a CVAE column; a full run after it skips them."""
    out = tmp_path / "results"
    argv = ["--data-dir", str(tiny_mnist), "--out-dir", str(out), "--epochs", "1", "--device", "cpu",
            "--iwae-k", "2", "--iwae-images", "4", "--no-download", "--parallel"]
    timings = reproduce.main([*argv, "--no-cvae"])
    assert "train ae + vae (at once)" in timings and "plot cvae" not in timings
    assert not (out / "cvae").exists()
    metrics = json.loads((out / "compare" / "metrics.json").read_text())
    assert set(metrics["models"]) == {"ae", "vae"}
    for name in ("ae", "vae"):
        run = json.loads((out / name / "run.json").read_text())
        assert run["environment"]["threads"] == max(1, (os.cpu_count() or 1) // 3)
    assert sorted(p.name for p in (out / "models").iterdir()) == ["ae.pt", "vae.pt"]
    ae_weights = torch.load(out / "ae" / "checkpoints" / "last.pt", weights_only=True)["model"]
    shipped = {p.name: p.stat().st_mtime_ns for p in (out / "models").iterdir()}
    full = reproduce.main(argv)  # only the CVAE is left to train
    assert "train cvae (at once)" in full
    # a model was trained: the comparison is made again (--overwrite); only the new model is shipped
    assert set(json.loads((out / "compare" / "metrics.json").read_text())["models"]) == {"ae", "vae", "cvae"}
    assert {p.name: p.stat().st_mtime_ns for p in (out / "models").iterdir() if p.name != "cvae.pt"} == shipped
    assert (out / "models" / "cvae.pt").is_file()
    again = torch.load(out / "ae" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(again[k], v) for k, v in ae_weights.items())


def test_reproduce_writes_a_new_folder_and_never_the_committed_results_unasked(tmp_path, monkeypatch, capsys):
    assert reproduce.parse_args([]).out_dir.name == "reproduction"
    committed = reproduce.COMMITTED_RESULTS
    before = sorted((p.relative_to(committed), p.stat().st_mtime_ns) for p in committed.rglob("*"))
    with pytest.raises(SystemExit) as refused:
        reproduce.main(["--out-dir", str(committed), "--data-dir", str(tmp_path), "--no-download"])
    assert str(refused.value.code).startswith("error: ") and "--replace-results" in str(refused.value.code)
    assert sorted((p.relative_to(committed), p.stat().st_mtime_ns) for p in committed.rglob("*")) == before


def test_a_second_seed_into_the_same_folder_is_refused(tmp_path, tiny_mnist):
    out = tmp_path / "run"
    argv = ["--data-dir", str(tiny_mnist), "--out-dir", str(out), "--epochs", "1", "--device", "cpu",
            "--iwae-k", "2", "--iwae-images", "4", "--no-download", "--no-cvae", "--no-parallel"]
    reproduce.main(argv)
    with pytest.raises(SystemExit) as refused:
        reproduce.main([*argv, "--seed", "1"])
    assert "was trained with seed 0, not 1" in str(refused.value.code)

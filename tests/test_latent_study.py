"""The latent-size study end to end on the tiny fixture: trains, evaluates, re-runs cheaply."""

import json

import pytest
import torch
from PIL import Image

from experiments import latent_study


def test_latent_study_end_to_end(tmp_path, tiny_mnist, capsys):
    out = tmp_path / "study"
    argv = ["--data-dir", str(tiny_mnist), "--out-dir", str(out), "--latent-dims", "1", "3", "--epochs", "1",
            "--batch-size", "32", "--iwae-k", "4", "--iwae-images", "8", "--device", "cpu", "--no-download"]
    study = latent_study.main(argv)

    assert [r["latent_dim"] for r in study["rows"]] == [1, 3]
    for row in study["rows"]:
        assert row["epochs"] == 1
        assert row["neg_elbo"] == pytest.approx(row["recon"] + row["kl"])
        assert row["iwae"]["nll"] <= row["iwae"]["neg_elbo_same_draws"]
        assert row["iwae"]["k"] == 4 and row["iwae"]["images"] == 8
        posterior = row["posterior"]
        assert len(posterior["kl_per_dim"]) == row["latent_dim"]
        assert sum(posterior["kl_per_dim"]) == pytest.approx(row["kl"], rel=1e-3)  # neg_elbo's KL, split by dimension
        assert 0 <= posterior["active_units"]["active"] <= row["latent_dim"]
    assert json.loads((out / "study.json").read_text()) == json.loads(json.dumps(study))
    for name in ("latent_study.png", "latent_samples.png"):
        with Image.open(out / name) as image:
            image.verify()
            assert image.format == "PNG"
    printed = capsys.readouterr().out
    assert sum(line.startswith("| ") for line in printed.splitlines()) == 1 + 2  # header + one row per size
    assert sum(line.startswith("KL per dimension, d = ") for line in printed.splitlines()) == 2

    # Re-running with the same settings trains nothing and gives the same numbers.
    again = latent_study.main(argv)
    assert "already has 1 epochs, not retrained" in capsys.readouterr().out
    assert again["rows"] == study["rows"]

    # More epochs resume the existing runs instead of starting over.
    more = latent_study.main([*argv[:argv.index("--epochs")], "--epochs", "2", *argv[argv.index("--epochs") + 2:]])
    assert [r["epochs"] for r in more["rows"]] == [2, 2]
    state = torch.load(out / "latent_3" / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and len(state["history"]) == 2

    # Fewer epochs than a finished run would mix training lengths: a one-line error.
    with pytest.raises(SystemExit) as exc:
        latent_study.main(argv)
    assert str(exc.value.code).startswith("error:") and "more than --epochs 1" in str(exc.value.code)


def test_binarized_likelihood_mode_with_parallel_runs_and_a_k_sweep(tmp_path, tiny_mnist, capsys):
    out = tmp_path / "likelihood"
    argv = ["--data-dir", str(tiny_mnist), "--out-dir", str(out), "--latent-dims", "2", "4", "--epochs", "1",
            "--batch-size", "32", "--iwae-k", "4", "--iwae-images", "40", "--device", "cpu", "--no-download",
            "--binarize", "dynamic", "--jobs", "2", "--k-sweep", "2", "8", "--k-sweep-images", "10", "--final-k", "6"]
    study = latent_study.main(argv)
    assert study["settings"]["binarize"] == "dynamic"
    for row in study["rows"]:
        state = torch.load(row["checkpoint"], weights_only=True)
        assert state["train"]["binarize"] == "dynamic" and state["config"]["latent_dim"] == row["latent_dim"]
        assert row["iwae"]["images"] == 40 and row["iwae"]["se"] > 0
    best = min(study["rows"], key=lambda r: r["neg_elbo"])
    assert [est["k"] for est in best["k_sweep"]] == [2, 8] and best["k_sweep"][0]["images"] == 10
    assert best["iwae_final"]["k"] == 6 and best["iwae_final"]["images"] == 40
    printed = capsys.readouterr().out
    assert "IWAE −log p(x) with k = 8 on 10 images" in printed and "with k = 6 on 40 images" in printed

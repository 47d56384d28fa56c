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
    assert [r.pop("this_run") for r in study["rows"]] == ["trained", "trained"]
    assert [r.pop("this_run") for r in again["rows"]] == ["reused", "reused"]
    assert again["rows"] == study["rows"]

    # More epochs resume the existing runs instead of starting over.
    more = latent_study.main([*argv[:argv.index("--epochs")], "--epochs", "2", *argv[argv.index("--epochs") + 2:]])
    assert [r["epochs"] for r in more["rows"]] == [2, 2] and [r["this_run"] for r in more["rows"]] == ["resumed"] * 2
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


def test_a_rerun_with_other_settings_reuses_nothing_it_should_not(tmp_path, tiny_mnist, capsys):
    """Another --lr or --binarize in a folder of runs: refused (study.json first, then the runs),
    nothing changed; --overwrite retrains the runs that differ and records what ran."""
    import hashlib

    def snapshot(folder):
        return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*")) if p.is_file()}

    out = tmp_path / "study"
    argv = ["--data-dir", str(tiny_mnist), "--out-dir", str(out), "--latent-dims", "2", "--epochs", "1",
            "--batch-size", "32", "--iwae-k", "2", "--iwae-images", "8", "--device", "cpu", "--no-download"]
    first = latent_study.main(argv)
    assert first["settings"]["lr"] == 2e-3 and first["settings"]["batch_size"] == 32  # the values used, not None
    assert first["rows"][0]["this_run"] == "trained" and first["rows"][0]["trained_with"]["lr"] == 2e-3
    before = snapshot(out)

    def refused(*extra):
        with pytest.raises(SystemExit) as exc:
            latent_study.main([*argv, *extra])
        assert snapshot(out) == before
        return str(exc.value.code)

    assert refused("--lr", "0.01") == (f"error: {out / 'study.json'} records a study with other settings (lr 0.002, "
                                       f"not 0.01): pass --overwrite to replace it (sizes trained with these settings "
                                       f"are reused), or use another --out-dir")
    assert "(binarize 'none', not 'dynamic')" in refused("--binarize", "dynamic")
    assert "(iwae_k 2, not 4)" in refused("--iwae-k", "4")
    assert "(latent_dims [2], not [2, 3])" in refused("--latent-dims", "2", "3")
    (out / "study.json").unlink()  # the runs are checked too
    before = snapshot(out)
    assert refused("--lr", "0.01") == (f"error: {out / 'latent_2' / 'checkpoints' / 'last.pt'} was trained with lr "
                                       f"0.002, not 0.01: pass --overwrite to retrain it, or another --out-dir")

    again = latent_study.main([*argv, "--binarize", "dynamic", "--iwae-k", "4", "--overwrite"])
    assert "is not a run of this study; retrained from scratch (--overwrite)" in capsys.readouterr().out
    row = again["rows"][0]
    assert row["this_run"] == "trained" and row["trained_with"]["binarize"] == "dynamic"
    assert again["settings"]["binarize"] == "dynamic" and again["settings"]["iwae_k"] == 4
    assert torch.load(row["checkpoint"], weights_only=True)["train"]["binarize"] == "dynamic"
    reused = latent_study.main([*argv, "--binarize", "dynamic", "--iwae-k", "4"])  # the same study: rewritten
    assert reused["rows"][0]["this_run"] == "reused" and reused["rows"][0]["neg_elbo"] == row["neg_elbo"]


def test_repeated_latent_sizes_are_refused(tmp_path):
    with pytest.raises(SystemExit) as exc:
        latent_study.main(["--out-dir", str(tmp_path / "s"), "--latent-dims", "2", "2"])
    assert exc.value.code == 2 and not (tmp_path / "s").exists()

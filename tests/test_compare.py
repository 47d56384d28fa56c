"""`python -m experiments.compare` end to end on the tiny fixture dataset."""

import json

import pytest
from PIL import Image

from experiments import compare
from vanila_autoencoder import train as ae_train
from variational_autoencoder import train as vae_train

FAST = ["--batch-size", "32", "--epochs", "1", "--device", "cpu", "--no-download"]


@pytest.fixture
def checkpoints(tmp_path, tiny_mnist):
    ae = ae_train.main(["--data-dir", str(tiny_mnist), "--out-dir", str(tmp_path / "ae"), *FAST])["checkpoint"]
    vae = vae_train.main(["--data-dir", str(tiny_mnist), "--out-dir", str(tmp_path / "vae"), *FAST])["checkpoint"]
    return ae, vae


def test_compare_end_to_end(tmp_path, tiny_mnist, checkpoints, capsys):
    ae, vae = checkpoints
    cvae = vae_train.main(["--data-dir", str(tiny_mnist), "--out-dir", str(tmp_path / "cvae"), "--conditional",
                           *FAST])["checkpoint"]
    out = tmp_path / "cmp"
    argv = ["--ae", str(ae), "--vae", str(vae), "--cvae", str(cvae), "--out-dir", str(out),
            "--data-dir", str(tiny_mnist), "--no-download", "--num-samples", "30", "--iwae-k", "4",
            "--iwae-images", "8", "--classifier-epochs", "1", "--device", "cpu", "--batch-size", "16"]
    metrics = compare.main(argv)
    printed = capsys.readouterr().out
    assert printed.count("classifier: trained") == 2
    assert (out / "classifier_blur.pt").is_file() and (out / "classifier_sharp.pt").is_file()

    for name in ("ae_vs_vae.png", "aggregate_posterior.png", "cvae_latent.png"):
        with Image.open(out / name) as image:
            image.verify()
            assert image.format == "PNG"
    with Image.open(out / "latent_evolution.gif") as gif:
        assert gif.n_frames == 1  # both runs trained one epoch
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    models = metrics["models"]
    assert set(models) == {"ae", "vae", "cvae"}
    for name in models:
        assert {"bce", "mse"} <= set(models[name]["reconstruction"])
        assert len(models[name]["latent"]["std_per_dim"]) == 2
        assert 0 <= models[name]["latent"]["share_in_prior"] <= 1
    sets = {"AE, z ~ N(0, I)", "AE, z ~ U(code box)", "AE + GMM", "VAE, z ~ N(0, I)", "VAE + GMM",
            "CVAE, z ~ N(0, I)", "real digits"}
    assert set(metrics["samples"]) == {"blur", "sharp"}
    for judged in metrics["samples"].values():
        assert set(judged) == sets
        for result in judged.values():
            assert 0.1 <= result["mean_confidence"] <= 1 and 0 <= result["class_entropy"] <= 1
            assert result["frechet_distance"] >= 0
        assert 0 <= judged["CVAE, z ~ N(0, I)"]["label_accuracy"] <= 1
        assert "label_accuracy" not in judged["VAE, z ~ N(0, I)"]
    likelihood = models["vae"]["likelihood"]
    assert likelihood["iwae"]["k"] == 4 and likelihood["iwae"]["images"] == 8
    assert likelihood["iwae"]["nll"] <= likelihood["iwae"]["neg_elbo_same_draws"]
    # only the smaller k below --iwae-k 4; k = 1 is the -ELBO of the same draws
    (one,) = likelihood["iwae"]["by_k"]
    assert one["k"] == 1 and one["nll"] == pytest.approx(likelihood["iwae"]["neg_elbo_same_draws"])
    assert likelihood["neg_elbo"] == pytest.approx(likelihood["recon"] + likelihood["kl"])
    posterior = models["vae"]["posterior"]
    assert sum(posterior["kl_per_dim"]) == pytest.approx(likelihood["kl"], rel=1e-4)  # the same KL, split by dim
    assert 0 <= posterior["active_units"]["active"] <= 2 and posterior["aggregate_kl"]["samples"] > 0

    table = [line for line in printed.splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(compare.MODEL_ROWS) + 2 * (2 + len(sets))
    assert all(line.count("|") == 5 for line in table[:2 + len(compare.MODEL_ROWS)])  # metric + 3 models

    compare.main(argv)  # second run: the cached classifiers
    assert "classifier: trained" not in capsys.readouterr().out


def test_compare_wrong_checkpoint_kind_is_one_line_error(tmp_path, tiny_mnist, checkpoints):
    ae, vae = checkpoints
    with pytest.raises(SystemExit) as exc:
        compare.main(["--ae", str(vae), "--vae", str(vae), "--out-dir", str(tmp_path / "cmp"),
                      "--data-dir", str(tiny_mnist), "--no-download"])
    message = str(exc.value.code)
    assert message.startswith("error:") and "\n" not in message and "autoencoder" in message


@pytest.mark.parametrize("poison,expect", [
    (lambda w: w["decoder.fc.weight"].view(-1)[7:8].fill_(float("inf")),
     "is unusable: weight decoder.fc.weight holds NaN or infinite values"),
    (lambda w: [v.mul_(1e30) for v in w.values() if v.is_floating_point()],  # finite, but the activations overflow
     "the model's codes are NaN or infinite: its weights overflow float32"),
], ids=["one-inf-weight", "overflowing-weights"])
def test_compare_refuses_weights_that_give_nan_with_one_line(tmp_path, tiny_mnist, checkpoints, poison, expect):
    import torch

    ae, vae = checkpoints
    state = torch.load(vae, weights_only=True)
    poison(state["model"])
    torch.save(state, vae)
    out = tmp_path / "cmp"
    with pytest.raises(SystemExit) as exc:
        compare.main(["--ae", str(ae), "--vae", str(vae), "--out-dir", str(out), "--data-dir", str(tiny_mnist),
                      "--no-download", "--num-samples", "30", "--iwae-k", "4", "--iwae-images", "8",
                      "--classifier-epochs", "1", "--device", "cpu", "--batch-size", "16"])
    message = str(exc.value.code)
    assert message.startswith("error:") and "\n" not in message and expect in message
    assert not (out / "metrics.json").exists() and not (out / "ae_vs_vae.png").exists()

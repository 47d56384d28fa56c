"""`python -m experiments.compare` end to end on the tiny fixture dataset."""

import json

import pytest
from conftest import one_line_exit
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

    assert metrics["settings"]["reference_images"] == 96  # the whole training split: fewer than 10,000
    assert models["cvae"]["epochs"] == 1 and models["vae"]["trained_with"]["batch_size"] == 32
    assert (metrics["settings"]["train_images"], metrics["settings"]["test_images"]) == (96, 40)
    assert "distance 96 training images against the test set" in printed

    compare.main([*argv, "--overwrite"])  # second run: the cached classifiers
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


# ----------------------------------------------------------------------------------------------
# each checkpoint against its slot; an earlier comparison kept unless --overwrite

SMALL = ["--filters", "4,4,4,4"]
ARGS = ["--num-samples", "30", "--iwae-k", "2", "--iwae-images", "8", "--classifier-epochs", "1", "--device", "cpu",
        "--batch-size", "16", "--no-download"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Checkpoints of tiny models: an AE, a VAE, a conditional VAE (MNIST), a binarized VAE, and an
    AE trained on Fashion-MNIST; with the data folder that holds both datasets."""
    from conftest import write_mnist

    root = tmp_path_factory.mktemp("runs")
    data = write_mnist(root / "data")
    write_mnist(data, folder="FashionMNIST", seed=1)
    made = {}
    for name, train, extra in (("ae", ae_train, []), ("vae", vae_train, []), ("cvae", vae_train, ["--conditional"]),
                               ("vae_binarized", vae_train, ["--binarize", "dynamic"]),
                               ("ae_fashion", ae_train, ["--dataset", "fashion-mnist"])):
        made[name] = train.main(["--data-dir", str(data), "--out-dir", str(root / name), *FAST, *SMALL,
                                 *extra])["checkpoint"]
    return data, made


def refused(argv):
    return one_line_exit(compare.main, argv)


@pytest.mark.parametrize("slots,expect", [
    ({"--ae": "ae", "--vae": "cvae"}, "error: --vae: {cvae} holds a conditional VAE; --vae needs a VAE that is not "
                                      "conditional"),
    ({"--ae": "ae", "--vae": "vae", "--cvae": "vae"}, "error: --cvae: {vae} holds an unconditional VAE; --cvae needs a "
                                                      "conditional VAE (trained with --conditional)"),
    ({"--ae": "vae", "--vae": "vae"}, "error: --ae: {vae} holds a variational autoencoder (variational_autoencoder); "
                                      "--ae needs an autoencoder (vanila_autoencoder)"),
    ({"--ae": "ae", "--vae": "ae"}, "error: --vae: {ae} holds an autoencoder (vanila_autoencoder); --vae needs a "
                                    "variational autoencoder (variational_autoencoder)"),
    ({"--ae": "ae_fashion", "--vae": "vae"}, "error: the models were trained on different data (--ae on "
                                             "fashion-mnist, --vae on mnist); compare models trained on the same "
                                             "dataset and binarization"),
    ({"--ae": "ae", "--vae": "vae_binarized"}, "error: the models were trained on different data (--ae on mnist, "
                                               "--vae on mnist, binarized (dynamic)); compare models trained on the "
                                               "same dataset and binarization"),
    ({"--ae": "ae", "--vae": "vae", "--dataset": "fashion-mnist"},
     "error: --dataset fashion-mnist: the models were trained on mnist; drop the flag or give models trained on "
     "fashion-mnist"),
], ids=["cvae-as-vae", "vae-as-cvae", "vae-as-ae", "ae-as-vae", "other-dataset", "binarized", "dataset-flag"])
def test_a_checkpoint_that_does_not_fit_its_slot_is_one_line(tmp_path, runs, slots, expect):
    data, made = runs
    argv = [x for flag, name in slots.items() for x in (flag, str(made.get(name, name)))]
    out = tmp_path / "cmp"
    assert refused([*argv, "--out-dir", str(out), "--data-dir", str(data), *ARGS]) == \
        expect.format(**{name: path for name, path in made.items()})
    assert not out.exists()  # refused before anything was made


def test_an_earlier_comparison_is_replaced_only_with_overwrite(tmp_path, runs):
    data, made = runs
    out = tmp_path / "cmp"
    argv = ["--ae", str(made["ae"]), "--vae", str(made["vae"]), "--out-dir", str(out), "--data-dir", str(data), *ARGS]
    compare.main([*argv, "--cvae", str(made["cvae"])])
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert "cvae_latent.png" in stamps
    assert refused(argv) == (f"error: {out} holds an earlier comparison (metrics.json, ae_vs_vae.png, "
                             f"latent_evolution.gif, aggregate_posterior.png, cvae_latent.png): pass --overwrite to "
                             f"replace it, or use another --out-dir")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    metrics = compare.main([*argv, "--overwrite"])  # without the CVAE: its figure goes with the old comparison
    assert set(metrics["models"]) == {"ae", "vae"}
    assert sorted(p.name for p in out.iterdir()) == sorted(set(stamps) - {"cvae_latent.png"})
    assert all(out.joinpath(name).stat().st_mtime_ns != stamps[name] for name in compare.OUTPUTS
               if name != "cvae_latent.png")


def test_binarized_models_are_measured_on_the_binary_test_set(tmp_path, runs):
    from common.checkpoint import load_model
    from common.data import evaluation_split, load_split
    from experiments.metrics import neg_elbo

    data, made = runs
    ae = ae_train.main(["--data-dir", str(data), "--out-dir", str(tmp_path / "ae"), *FAST, *SMALL,
                        "--binarize", "dynamic"])["checkpoint"]
    metrics = compare.main(["--ae", str(ae), "--vae", str(made["vae_binarized"]), "--out-dir", str(tmp_path / "cmp"),
                            "--data-dir", str(data), *ARGS])
    assert metrics["settings"]["binarize"] == "dynamic"
    binary = evaluation_split(load_split(data, "mnist", "test", download=False), "dynamic")
    expected = neg_elbo(load_model(made["vae_binarized"]), binary.images, 16, seed=0)["neg_elbo"]
    assert metrics["models"]["vae"]["likelihood"]["neg_elbo"] == pytest.approx(expected, rel=1e-5)


def test_too_few_images_for_the_mixtures_is_one_line(tmp_path, runs):
    from conftest import write_mnist

    data, made = runs
    small = write_mnist(tmp_path / "small", n_train=9, n_test=1)
    out = tmp_path / "cmp"
    assert refused(["--ae", str(made["ae"]), "--vae", str(made["vae"]), "--out-dir", str(out), "--data-dir",
                    str(small), *ARGS]) == (
        f"error: {small / 'MNIST' / 'raw'}/ holds 9 training and 1 test images; the comparison needs 10 training "
        f"images at least (its mixtures have 10 components) and 2 test images")
    assert not out.exists()

"""The digit classifier and `python -m common.compare` end to end on the tiny fixture dataset."""

import json

import pytest
import torch
from PIL import Image

from common import compare
from common.classifier import (ClassifierConfig, ClassifierTraining, DigitClassifier, classify, load_classifier,
                               load_or_train_classifier, train_classifier)
from common.data import load_split
from variational_autoencoder import train as vae_train
from vanila_autoencoder import train as ae_train

FAST = ["--batch-size", "32", "--epochs", "1", "--device", "cpu", "--no-download"]


def test_classifier_shapes():
    model = DigitClassifier(ClassifierConfig(channels=(4, 8), features=16))
    out = classify(model, torch.rand(5, 1, 28, 28), batch_size=2)
    assert out.logits.shape == (5, 10) and out.features.shape == (5, 16)
    assert (out.features >= 0).all()  # after the ReLU
    # the logits are the last layer applied to the features
    with torch.inference_mode():
        assert torch.allclose(out.logits, model.fc_logits(out.features), atol=1e-6)


def test_classifier_cache_round_trip(tmp_path, tiny_mnist):
    train, test = (load_split(tiny_mnist, "mnist", split, download=False) for split in ("train", "test"))
    calls = []

    def load_train():
        calls.append(1)
        return train

    path = tmp_path / "classifier.pt"
    quiet = dict(training=ClassifierTraining(epochs=1), log=lambda line: None)
    model, info = load_or_train_classifier(path, load_train, test, **quiet)
    assert calls == [1] and path.is_file() and 0 <= info["test_accuracy"] <= 1
    state = torch.load(path, weights_only=True)  # plain types only
    assert state["kind"] == "classifier" and state["dataset"] == "mnist"

    again, _ = load_or_train_classifier(path, load_train, test, **quiet)  # cached: no training
    assert calls == [1]
    # same weights (the trained copy is channels_last, so the conv kernels may round differently)
    assert torch.allclose(classify(model, test.images).logits, classify(again, test.images).logits, atol=1e-5)

    load_or_train_classifier(path, load_train, test, retrain=True, **quiet)
    assert calls == [1, 1]
    load_or_train_classifier(path, load_train, test, dataset="fashion-mnist", **quiet)  # another dataset: retrain
    assert calls == [1, 1, 1] and load_classifier(path)[1]["dataset"] == "fashion-mnist"


def test_classifier_learns_the_fixture(tiny_mnist):
    # the fixture's classes are blobs at label-dependent places: easy to tell apart
    train = load_split(tiny_mnist, "mnist", "train", download=False)
    model = train_classifier(train, ClassifierConfig(channels=(8, 16), features=32),
                             ClassifierTraining(epochs=20, batch_size=32, lr=1e-2))
    predicted = classify(model, train.images).logits.argmax(1)
    assert (predicted == train.labels).float().mean() > 0.9


@pytest.fixture
def checkpoints(tmp_path, tiny_mnist):
    ae = ae_train.main(["--data-dir", str(tiny_mnist), "--out-dir", str(tmp_path / "ae"), *FAST])["checkpoint"]
    vae = vae_train.main(["--data-dir", str(tiny_mnist), "--out-dir", str(tmp_path / "vae"), *FAST])["checkpoint"]
    return ae, vae


def test_compare_end_to_end(tmp_path, tiny_mnist, checkpoints, capsys):
    ae, vae = checkpoints
    out = tmp_path / "cmp"
    argv = ["--ae", str(ae), "--vae", str(vae), "--out-dir", str(out), "--data-dir", str(tiny_mnist),
            "--no-download", "--num-samples", "30", "--iwae-k", "4", "--iwae-images", "8",
            "--classifier-epochs", "1", "--device", "cpu", "--batch-size", "16"]
    metrics = compare.main(argv)
    printed = capsys.readouterr().out
    assert "classifier: trained" in printed and (out / "classifier.pt").is_file()

    with Image.open(out / "ae_vs_vae.png") as image:
        image.verify()
        assert image.format == "PNG"
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    for name in ("ae", "vae"):
        assert {"bce", "mse"} <= set(metrics[name]["reconstruction"])
        assert len(metrics[name]["latent"]["std_per_dim"]) == 2
        assert 0 <= metrics[name]["latent"]["share_in_prior"] <= 1
        samples = metrics[name]["samples"]
        assert 0.1 <= samples["mean_confidence"] <= 1 and 0 <= samples["class_entropy"] <= 1
        assert samples["frechet_distance"] >= 0
    likelihood = metrics["vae"]["likelihood"]
    assert likelihood["iwae"]["k"] == 4 and likelihood["iwae"]["images"] == 8
    assert likelihood["iwae"]["nll"] <= likelihood["iwae"]["neg_elbo_same_draws"]
    assert likelihood["neg_elbo"] == pytest.approx(likelihood["recon"] + likelihood["kl"])

    table = [line for line in printed.splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(compare.ROWS)
    assert all(line.count("|") == 6 for line in table)

    compare.main(argv)  # second run: the cached classifier
    assert "classifier: trained" not in capsys.readouterr().out


def test_compare_wrong_checkpoint_kind_is_one_line_error(tmp_path, tiny_mnist, checkpoints):
    ae, vae = checkpoints
    with pytest.raises(SystemExit) as exc:
        compare.main(["--ae", str(vae), "--vae", str(vae), "--out-dir", str(tmp_path / "cmp"),
                      "--data-dir", str(tiny_mnist), "--no-download"])
    message = str(exc.value.code)
    assert message.startswith("error:") and "\n" not in message and "autoencoder" in message


def test_a_bad_classifier_cache_is_one_line_error_naming_the_fix(tmp_path):
    from common.checkpoint import CheckpointError, save_checkpoint

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file at all")
    with pytest.raises(CheckpointError, match=r"garbage.pt is not a checkpoint .*; pass --retrain-classifier"):
        load_classifier(garbage)
    model_file = tmp_path / "model.pt"
    save_checkpoint(model_file, {"kind": "vae", "config": {}, "model": {}})
    with pytest.raises(CheckpointError, match="not a digit-classifier checkpoint; pass --retrain-classifier"):
        load_classifier(model_file)
    no_weights = tmp_path / "no_weights.pt"
    save_checkpoint(no_weights, {"kind": "classifier", "config": {}})
    with pytest.raises(CheckpointError, match="classifier weights do not fit its config"):
        load_classifier(no_weights)

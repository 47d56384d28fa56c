"""experiments/classifier.py: the judge classifier (shapes, cache, learning) and its blur augmentation,
against a Gaussian worked out directly."""

import math

import pytest
import torch

from common.checkpoint import save_checkpoint
from common.data import load_split
from common.errors import CheckpointError
from experiments.classifier import (
    ClassifierConfig,
    ClassifierTraining,
    DigitClassifier,
    classify,
    load_classifier,
    load_or_train_classifier,
    random_blur,
    train_classifier,
)


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


def test_a_bad_classifier_cache_is_one_line_error_naming_the_fix(tmp_path):
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


def test_blur_of_a_point_is_a_normalised_separable_gaussian():
    x = torch.zeros(2, 1, 15, 15)
    x[:, 0, 7, 7] = 1.0
    gen = torch.Generator().manual_seed(3)
    sigma = float(torch.rand((), generator=torch.Generator().manual_seed(3))) * 1.5  # the draw random_blur makes
    y = random_blur(x, 1.5, gen)
    assert y.shape == x.shape
    assert torch.allclose(y.sum((1, 2, 3)), torch.ones(2), atol=1e-6)  # mass kept away from the border
    radius = math.ceil(2 * 1.5)
    weights = [math.exp(-0.5 * (i / sigma) ** 2) for i in range(-radius, radius + 1)]
    total = sum(weights)
    # y[7 + a, 7 + b] = w(a) w(b) / total^2
    for a, b in [(0, 0), (1, 0), (2, 1), (3, 3)]:
        expected = weights[radius + a] * weights[radius + b] / total**2
        assert y[0, 0, 7 + a, 7 + b].item() == pytest.approx(expected, rel=1e-5)
    assert torch.equal(y[0], y[1])  # one sigma for the whole batch


def test_tiny_sigma_leaves_images_unchanged():
    x = torch.rand(3, 1, 28, 28)
    y = random_blur(x, 1e-4, torch.Generator().manual_seed(0))
    assert torch.allclose(y, x, atol=1e-6)

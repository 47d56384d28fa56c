"""The judge: a small CNN digit classifier that scores generated images.

It gives confidence, class spread and an MNIST "FID" on its penultimate features. Trained once
on the training split and cached as a checkpoint; `load_or_train_classifier` reuses the file
unless asked to retrain.

    conv 3x3 (32) -> ReLU -> BN -> max-pool 2   28 -> 14
    conv 3x3 (64) -> ReLU -> BN -> max-pool 2   14 -> 7
    flatten -> linear (128) -> ReLU             the features
    linear (10)                                 the logits

Two epochs of Adam with a cosine learning-rate schedule, through the same training loop as the
models (common/loop.py), reach about 99 % test accuracy on MNIST.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from common.checkpoint import read_checkpoint, save_checkpoint, weights_problem
from common.data import NUM_CLASSES, Split, epoch_generator, iterate_batches
from common.device import autocast, resolve_precision
from common.errors import CheckpointError
from common.loop import Batch, LossFn, lr_at, make_optimizer, train_one_epoch

KIND = "classifier"


@dataclass
class ClassifierConfig:
    channels: tuple[int, ...] = (32, 64)  # output channels of each conv block (each halves the size)
    features: int = 128  # size of the penultimate layer (the features used for the Fréchet distance)
    num_classes: int = NUM_CLASSES  # number of digit classes
    image_channels: int = 1  # 1 for MNIST
    image_size: int = 28  # height = width of the input

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        # a cached file is read back into this: bound it before a model is built from it
        if not 1 <= len(self.channels) <= 8 or min(self.channels) < 1:
            raise ValueError(f"channels must be 1 to 8 positive integers, got {self.channels[:10]}")


@dataclass
class ClassifierTraining:
    epochs: int = 2  # passes over the training split
    batch_size: int = 128  # images per step
    lr: float = 3e-3  # peak of the learning-rate schedule
    lr_schedule: str = "cosine"  # as the models' (common/loop.py lr_at); recorded so older caches are retrained
    seed: int = 0  # initialisation and shuffling
    # Each training batch is blurred with a Gaussian of sigma ~ U(0, max_blur_sigma) pixels. The
    # classifier judges decoded samples, which are pixel-wise Bernoulli means and so blurrier than
    # the data; trained on sharp digits only, it reads a blurred 3 as a 5 or an 8 (measured).
    max_blur_sigma: float = 1.5


class Classification(NamedTuple):
    logits: torch.Tensor  # (N, num_classes)
    features: torch.Tensor  # (N, features): penultimate activations


class DigitClassifier(nn.Module):
    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        blocks: list[nn.Module] = []
        c_in = config.image_channels
        for c_out in config.channels:
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm2d(c_out),
                       nn.MaxPool2d(2)]
            c_in = c_out
        self.convs = nn.Sequential(*blocks)
        size = config.image_size // 2 ** len(config.channels)
        self.fc_features = nn.Linear(c_in * size * size, config.features)
        self.fc_logits = nn.Linear(config.features, config.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, C, H, W) in [0, 1] -> penultimate features (N, features)."""
        return F.relu(self.fc_features(self.convs(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, C, H, W) in [0, 1] -> logits (N, num_classes)."""
        return self.fc_logits(self.features(x))


@torch.inference_mode()
def classify(model: DigitClassifier, x: torch.Tensor, batch_size: int = 1000) -> Classification:
    """Logits and features of every image, on the CPU, in float32 (no autocast: these feed metrics)."""
    model.eval()
    device = next(model.parameters()).device
    logits, feats = [], []
    for batch in iterate_batches(x, batch_size):
        f = model.features(batch.to(device))
        feats.append(f.float().cpu())
        logits.append(model.fc_logits(f).float().cpu())
    return Classification(torch.cat(logits), torch.cat(feats))


def accuracy(model: DigitClassifier, split: Split, batch_size: int = 1000) -> float:
    predicted = classify(model, split.images, batch_size).logits.argmax(1)
    return (predicted == split.labels).float().mean().item()


def random_blur(x: torch.Tensor, max_sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Blur the batch x (N, 1, H, W) with one Gaussian, sigma ~ U(0, max_sigma) pixels: one small
    convolution per batch, so the augmentation costs almost nothing."""
    radius = max(1, math.ceil(2 * max_sigma))
    sigma = max(float(torch.rand((), generator=generator)) * max_sigma, 1e-3)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k1 = torch.exp(-0.5 * (offsets / sigma) ** 2)
    k1 = k1 / k1.sum()
    kernel = (k1.view(-1, 1) * k1.view(1, -1)).view(1, 1, 2 * radius + 1, 2 * radius + 1).to(x.device, x.dtype)
    return F.conv2d(x, kernel, padding=radius)


def blurred_cross_entropy(max_blur_sigma: float, generator: torch.Generator) -> LossFn:
    """The classifier's loss for the shared training loop: cross-entropy on a randomly blurred batch."""

    def loss_fn(model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        x, y = batch
        if max_blur_sigma > 0:
            x = random_blur(x, max_blur_sigma, generator)
        return {"loss": F.cross_entropy(model(x), y)}

    return loss_fn


def train_classifier(
    train: Split,
    config: ClassifierConfig | None = None,
    training: ClassifierTraining | None = None,
    device: torch.device = torch.device("cpu"),
    precision: str = "auto",
) -> DigitClassifier:
    """Fit a DigitClassifier on `train` with the models' training loop; returns it in eval mode on `device`."""
    config = config or ClassifierConfig()
    training = training or ClassifierTraining()
    precision = resolve_precision(precision, device)
    torch.manual_seed(training.seed)
    model = DigitClassifier(config).to(device=device, memory_format=torch.channels_last)
    data = (train.images.to(device).contiguous(memory_format=torch.channels_last), train.labels.to(device))
    steps = math.ceil(len(train) / training.batch_size)
    optimizer = make_optimizer(model, training.lr)
    for epoch in tqdm(range(training.epochs), desc="classifier", unit="epoch", leave=False, disable=None):
        gen = epoch_generator(training.seed, epoch)  # shuffles, then draws each batch's blur
        first = epoch * steps
        train_one_epoch(model, iterate_batches(data, training.batch_size, gen), optimizer,
                        blurred_cross_entropy(training.max_blur_sigma, gen), epoch=epoch + 1,
                        lr_for_step=lambda i: lr_at(first + i, training.epochs * steps, training.lr,
                                                    training.lr_schedule),
                        amp=lambda: autocast(device, precision))
    return model.eval()


def save_classifier(path: str | os.PathLike, model: DigitClassifier, info: dict[str, Any]) -> Path:
    """Plain types only (weights_only-loadable), written atomically."""
    cpu_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_checkpoint(path, {"kind": KIND, "config": dataclasses.asdict(model.config), "model": cpu_state,
                                  **info})


def load_classifier(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                    ) -> tuple[DigitClassifier, dict[str, Any]]:
    """The cached classifier in eval mode, and the rest of its file (accuracy, training settings)."""
    path = Path(path)
    try:
        state = read_checkpoint(path)
    except CheckpointError as err:
        raise CheckpointError(f"{err}; pass --retrain-classifier to replace it") from None
    if not isinstance(state, dict) or state.get("kind") != KIND:
        raise CheckpointError(f"{path} is not a digit-classifier checkpoint; pass --retrain-classifier "
                              f"or point --classifier elsewhere")
    try:
        config = ClassifierConfig(**state["config"])
        # names, shapes and NaN checked on the meta device before anything is allocated
        problem = weights_problem(state.get("model"), lambda: DigitClassifier(config))
        if problem:
            raise ValueError(problem)
        model = DigitClassifier(config)
        model.load_state_dict(state["model"])
    except (TypeError, ValueError, RuntimeError, KeyError) as err:
        raise CheckpointError(f"{path}: classifier weights do not fit its config ({str(err).splitlines()[0]}); "
                              f"pass --retrain-classifier") from None
    info = {k: v for k, v in state.items() if k not in ("model", "config")}
    return model.to(map_location).eval(), info


def load_or_train_classifier(
    path: str | os.PathLike,
    train: Callable[[], Split],
    test: Split,
    *,
    dataset: str = "mnist",
    retrain: bool = False,
    training: ClassifierTraining | None = None,
    device: torch.device = torch.device("cpu"),
    log: Callable[[str], None] = print,
) -> tuple[DigitClassifier, dict[str, Any]]:
    """Reuse the classifier cached at `path`, or train one (and cache it) when the file is missing,
    holds another dataset's classifier, or `retrain` is set. `train` loads the training split only
    when needed."""
    path = Path(path)
    if path.exists() and not retrain:
        model, info = load_classifier(path, device)
        training = training or ClassifierTraining()
        if info.get("dataset") == dataset and info.get("training") == dataclasses.asdict(training):
            log(f"classifier: {path} (test accuracy {info['test_accuracy']:.2%})")
            return model, info
        log(f"classifier: {path} was trained on {info.get('dataset')!r} with other settings; retraining")
    training = training or ClassifierTraining()
    t0 = time.perf_counter()
    model = train_classifier(train(), training=training, device=device)
    seconds = time.perf_counter() - t0
    info = {"dataset": dataset, "test_accuracy": accuracy(model, test),
            "train_seconds": seconds, "device": str(device), "training": dataclasses.asdict(training)}
    save_classifier(path, model, info)
    log(f"classifier: trained in {seconds:.1f}s on {device}, test accuracy {info['test_accuracy']:.2%}, "
        f"saved to {path}")
    return model, info

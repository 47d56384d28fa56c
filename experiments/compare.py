"""Compare a trained AE and VAE: reconstruction, latent geometry, prior-sample quality, likelihood.

    python -m experiments.compare --ae vanila_autoencoder/checkpoints/last.pt \
        --vae variational_autoencoder/checkpoints/last.pt --data-dir ../shared/data --out-dir comparison

Writes <out-dir>/ae_vs_vae.png (decoded N(0, I) samples side by side, both latent scatters with the
prior's 1σ and 2σ circles) and <out-dir>/metrics.json, and prints a Markdown table. Prior samples
are judged by a small CNN classifier trained on the training split the first time and cached at
<out-dir>/classifier.pt (--retrain-classifier replaces it).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from common import figures
from common.checkpoint import load_for_inference
from common.codes import decode_codes, encode_codes, uniform_in_box
from common.data import DATASETS, Split, load_split
from common.device import DEVICES, get_device
from common.errors import exit_on_error, signals_deferred
from common.files import write_json
from common.metrics import (class_entropy, confidence_stats, frechet_distance_from_moments, gaussian_moments,
                            iwae_nll, latent_geometry, neg_elbo, prior_radius, reconstruction_metrics)
from common.options import non_negative_float, positive_int
from experiments.classifier import (Classification, ClassifierTraining, DigitClassifier, classify,
                                    load_or_train_classifier)

GRID = 10  # ae_vs_vae.png shows GRID x GRID samples per model
REFERENCE_IMAGES = 10_000  # training images whose features are compared with the test set's (the "FID" floor)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Compare a trained autoencoder and VAE (figure, metrics, table).")
    parser.add_argument("--ae", type=Path, required=True, help="the autoencoder's checkpoint")
    parser.add_argument("--vae", type=Path, required=True, help="the VAE's checkpoint")
    parser.add_argument("--out-dir", type=Path, default=Path("comparison"),
                        help="where ae_vs_vae.png, metrics.json and the classifier go (default: comparison)")
    parser.add_argument("--data-dir", help="folder holding MNIST/raw/ (default: the VAE's training data)")
    parser.add_argument("--dataset", choices=tuple(DATASETS), help="(default: the VAE's training dataset)")
    parser.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                        help="download the dataset when missing (default: true)")
    parser.add_argument("--num-samples", type=positive_int, default=10_000,
                        help="prior samples per model judged by the classifier (default: 10000)")
    parser.add_argument("--iwae-k", type=positive_int, default=1000,
                        help="importance samples per image for the -log p(x) estimate (default: 1000)")
    parser.add_argument("--iwae-images", type=positive_int, default=1000,
                        help="test images for the -log p(x) estimate (default: 1000)")
    parser.add_argument("--classifier", type=Path, help="cached classifier (default: <out-dir>/classifier.pt)")
    parser.add_argument("--retrain-classifier", action="store_true",
                        help="train the classifier again and replace the cache")
    parser.add_argument("--classifier-blur", type=non_negative_float, default=ClassifierTraining.max_blur_sigma,
                        help="largest Gaussian blur (pixels) of the classifier's training augmentation; 0 = none "
                             f"(default: {ClassifierTraining.max_blur_sigma})")
    parser.add_argument("--classifier-epochs", type=positive_int, default=ClassifierTraining.epochs,
                        help=f"epochs when the classifier is trained (default: {ClassifierTraining.epochs})")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="(default: auto: cuda, then mps, then cpu)")
    parser.add_argument("--batch-size", type=positive_int, default=1000,
                        help="images per inference batch (default: 1000)")
    parser.add_argument("--seed", type=int, default=0, help="prior samples and the VAE's noise (default: 0)")
    return parser.parse_args(argv)


def judge_images(classifier: DigitClassifier, images: torch.Tensor,
                 reference: tuple[np.ndarray, np.ndarray], batch_size: int = 1000) -> dict[str, float]:
    """The classifier's verdict on a set of images (see `verdict`)."""
    return verdict(classify(classifier, images, batch_size), reference)


def verdict(out: Classification, reference: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    """Confidence, class spread, and the Fréchet distance of the features to `reference` (mean and
    covariance of the test set's features)."""
    probs = torch.softmax(out.logits, 1)
    predicted = out.logits.argmax(1)
    return {**confidence_stats(probs.numpy()),
            "class_entropy": class_entropy(predicted.numpy(), out.logits.shape[1]),
            "class_shares": (torch.bincount(predicted, minlength=out.logits.shape[1]).double() / len(predicted)).tolist(),
            "frechet_distance": frechet_distance_from_moments(*gaussian_moments(out.features.numpy()), *reference)}


def first_two_dims(codes: torch.Tensor) -> np.ndarray:
    """(N, d) -> (N, 2) for a scatter: the first two dimensions, a zero column when d = 1."""
    if codes.shape[1] == 1:
        codes = torch.cat([codes, torch.zeros_like(codes)], 1)
    return codes[:, :2].numpy()


def describe_model(model: nn.Module, test: Split, batch_size: int) -> tuple[dict[str, Any], torch.Tensor]:
    """Reconstruction and latent-geometry metrics; also returns the test codes."""
    codes = encode_codes(model, test.images, batch_size)
    return {"latent_dim": model.latent_dim,
            "reconstruction": reconstruction_metrics(model, test.images, batch_size),
            "latent": latent_geometry(codes)}, codes


# (section, label, json path, format): the rows of the printed table
ROWS = [
    ("reconstruction", "test BCE (nats/image)", ("reconstruction", "bce"), ".2f"),
    ("reconstruction", "test MSE (per pixel)", ("reconstruction", "mse"), ".4f"),
    ("latent", "‖mean code‖", ("latent", "mean_norm"), ".3f"),
    ("latent", "std per dimension", ("latent", "std_per_dim"), ".2f"),
    ("latent", "centre offset ‖mean‖ / mean std", ("latent", "centre_offset"), ".3f"),
    ("latent", "share inside the prior's 95 % ball", ("latent", "share_in_prior"), ".3f"),
    ("samples", "mean max-softmax confidence", ("samples", "mean_confidence"), ".3f"),
    ("samples", "share with confidence ≥ 0.9", ("samples", "share_confident"), ".3f"),
    ("samples", "class entropy (1 = uniform)", ("samples", "class_entropy"), ".3f"),
    ("samples", "Fréchet distance to test features", ("samples", "frechet_distance"), ".2f"),
    ("likelihood", "test −ELBO (nats)", ("likelihood", "neg_elbo"), ".2f"),
    ("likelihood", "IWAE −log p(x) (nats)", ("likelihood", "iwae", "nll"), ".2f"),
]


def _lookup(obj: Any, keys: tuple[str, ...]) -> Any:
    for key in keys:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def _format(value: Any, fmt: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, list):
        return ", ".join(format(v, fmt) for v in value)
    return format(value, fmt)


def format_table(metrics: dict[str, Any]) -> str:
    """The Markdown table: one row per metric, columns AE, VAE, AE with box samples, real digits."""
    ae, vae = metrics["ae"], metrics["vae"]
    columns = [
        (f"AE (d={ae['latent_dim']})", ae),
        (f"VAE (d={vae['latent_dim']})", vae),
        ("AE, z ~ U(code box)", {"samples": ae["samples_uniform_box"]}),
        ("real digits", {"samples": metrics["reference"]}),
    ]
    iwae = vae["likelihood"]["iwae"]
    lines = ["| metric | " + " | ".join(name for name, _ in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for section, label, keys, fmt in ROWS:
        if section == "samples":
            label = "samples: " + label
        if keys[-1] == "nll":
            label = f"IWAE −log p(x), k={iwae['k']}, {iwae['images']} images (nats)"
        lines.append(f"| {label} | " + " | ".join(_format(_lookup(col, keys), fmt) for _, col in columns) + " |")
    settings = metrics["settings"]
    lines += ["", f"samples: {settings['num_samples']} decoded z ~ N(0, I) per model (the AE also z uniform over the "
                  f"bounding box of its test codes), judged by the digit classifier (test accuracy "
                  f"{metrics['classifier']['test_accuracy']:.2%}); real digits: the test set, and for the Fréchet "
                  f"distance {settings['reference_images']} training images against the test set."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with exit_on_error():
        seconds: dict[str, float] = {}
        t0 = time.perf_counter()
        device = get_device(args.device)
        ae, _ = load_for_inference(args.ae, device, kind="ae")
        vae, vae_state = load_for_inference(args.vae, device, kind="vae")
        train_cfg = vae_state.get("train", {})
        data_dir = args.data_dir or train_cfg.get("data_dir", "data")
        dataset = args.dataset or train_cfg.get("dataset", "mnist")
        test = load_split(data_dir, dataset, "test", download=args.download)
        train_cache: list[Split] = []

        def train_split() -> Split:  # loaded at most once, and only when needed
            if not train_cache:
                train_cache.append(load_split(data_dir, dataset, "train", download=args.download))
            return train_cache[0]

        args.out_dir.mkdir(parents=True, exist_ok=True)
        classifier, classifier_info = load_or_train_classifier(
            args.classifier or args.out_dir / "classifier.pt", train_split, test, dataset=dataset,
            retrain=args.retrain_classifier, training=ClassifierTraining(epochs=args.classifier_epochs, seed=args.seed,
                                                                   max_blur_sigma=args.classifier_blur),
            device=device)
        seconds["setup_and_classifier"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        test_out = classify(classifier, test.images, args.batch_size)
        test_moments = gaussian_moments(test_out.features.numpy())
        real = train_split().images[:REFERENCE_IMAGES]
        # real digits: the verdict on the test set itself; its Fréchet distance (0 by definition)
        # replaced by that of training images, the floor a perfect generator would reach
        reference = {**verdict(test_out, test_moments),
                     "frechet_distance": judge_images(classifier, real, test_moments,
                                                      args.batch_size)["frechet_distance"]}
        seconds["reference"] = time.perf_counter() - t0

        results: dict[str, dict[str, Any]] = {}
        samples: dict[str, torch.Tensor] = {}
        codes: dict[str, torch.Tensor] = {}
        for name, model, path in (("ae", ae, args.ae), ("vae", vae, args.vae)):
            t0 = time.perf_counter()
            results[name], codes[name] = describe_model(model, test, args.batch_size)
            results[name]["checkpoint"] = str(path)
            gen = torch.Generator().manual_seed(args.seed)  # the same draws for both models
            z = torch.randn(args.num_samples, model.latent_dim, generator=gen)
            samples[name] = decode_codes(model, z, args.batch_size)
            results[name]["samples"] = judge_images(classifier, samples[name], test_moments, args.batch_size)
            seconds[name] = time.perf_counter() - t0
        t0 = time.perf_counter()
        box = uniform_in_box(codes["ae"], args.num_samples, torch.Generator().manual_seed(args.seed))
        results["ae"]["samples_uniform_box"] = judge_images(classifier, decode_codes(ae, box, args.batch_size),
                                                            test_moments, args.batch_size)
        seconds["ae_box_samples"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        likelihood = neg_elbo(vae, test.images, args.batch_size, seed=args.seed)
        seconds["vae_neg_elbo"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        n_iwae = min(args.iwae_images, len(test))
        print(f"IWAE bound: k={args.iwae_k} on {n_iwae} test images ...", flush=True)
        likelihood["iwae"] = iwae_nll(vae, test.images[:n_iwae], args.iwae_k, seed=args.seed)
        seconds["vae_iwae"] = time.perf_counter() - t0
        results["vae"]["likelihood"] = likelihood

        metrics = {
            "ae": results["ae"], "vae": results["vae"], "reference": reference,
            "prior_radius_95": {name: prior_radius(r["latent_dim"]) for name, r in results.items()},
            "classifier": {k: v for k, v in classifier_info.items() if k != "format_version"},
            "settings": {"data_dir": str(data_dir), "dataset": dataset, "num_samples": args.num_samples,
                         "iwae_k": args.iwae_k, "iwae_images": n_iwae, "seed": args.seed, "device": str(device),
                         "reference_images": len(real)},
            "seconds": seconds,
        }
        with signals_deferred():  # SIGINT/SIGTERM wait: the figure and metrics.json are written together
            figure = figures.plot_ae_vs_vae(samples["ae"].numpy(), samples["vae"].numpy(),
                                            first_two_dims(codes["ae"]), first_two_dims(codes["vae"]),
                                            test.labels.numpy(), args.out_dir / "ae_vs_vae.png",
                                            grid=min(GRID, math.isqrt(args.num_samples)))
            write_json(args.out_dir / "metrics.json", _finite(metrics))
    print(format_table(metrics))
    print(figure)
    print(args.out_dir / "metrics.json")
    return metrics


def _finite(obj: Any) -> Any:
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


if __name__ == "__main__":
    main()

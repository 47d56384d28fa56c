"""Compare a trained AE and VAE (and a conditional VAE): everything the README's results tables say.

Reconstruction, latent geometry, the quality of generated samples under two judges, likelihood and
posterior diagnostics.

    python -m experiments.compare --ae vanila_autoencoder/checkpoints/last.pt \
        --vae variational_autoencoder/checkpoints/last.pt --out-dir comparison

Sample sets, each decoded and judged by digit classifiers:
    AE, z ~ N(0, I)         the prior the AE never saw
    AE, z ~ U(code box)     uniform over the box its test codes span
    AE + GMM                a 10-component Gaussian mixture fitted to its training codes after training
    VAE, z ~ N(0, I)        its prior
    VAE + GMM               the same mixture fitted to its training posterior means
    CVAE, z ~ N(0, I)       (with --cvae) labels 0..9 in equal shares; the judge's accuracy on them
    real digits             the test set (the ceiling)
Every sample claim is measured under two judges: a classifier trained on blurred digits (decoded
samples are Bernoulli means, blurrier than the data) and one trained on sharp digits only. They
are trained on the training split the first time and cached in <out-dir>.

Writes <out-dir>/ae_vs_vae.png (prior and GMM samples of both models, both latent scatters with
the prior's 1σ and 2σ circles), latent_evolution.gif (both latent spaces forming, when the runs
kept latent_codes.npz), aggregate_posterior.png (the VAE's q(z) next to N(0, I), for d = 2),
cvae_latent.png (with --cvae) and metrics.json, and prints Markdown tables. An earlier comparison's
outputs in <out-dir> are replaced only with --overwrite.

Each checkpoint must fit its flag: --ae an autoencoder, --vae a VAE that is not conditional, --cvae a
conditional one, all trained on the same data (dataset and binarization; --dataset, when given,
must be theirs). Models trained with --binarize dynamic are measured on the fixed binary test set.
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
from tqdm import tqdm

from common import figures
from common.data import DATASETS, NUM_CLASSES, Split, data_dir_for, evaluation_split, load_split, raw_folder
from common.device import DEVICES, get_device
from common.errors import DataError, exit_on_error, signals_deferred
from common.files import check_writable, removed_if_left_empty, write_json
from common.latents import (
    balanced_labels,
    decode_codes,
    encode_codes,
    find_code_history,
    first_two_dims,
    uniform_in_box,
)
from common.options import MAX_COUNT, NumberRange, positive_int, seed_int
from common.speed import keep_freed_memory_on
from experiments import figures as study_figures
from experiments.classifier import (
    Classification,
    ClassifierTraining,
    DigitClassifier,
    classify,
    load_or_train_classifier,
)
from experiments.metrics import (
    aggregate_log_density,
    class_entropy,
    confidence_stats,
    estimate_images,
    frechet_distance_from_moments,
    gaussian_moments,
    iwae_nll,
    latent_geometry,
    neg_elbo,
    posterior_diagnostics,
    posterior_parameters,
    prior_radius,
    reconstruction_metrics,
)
from experiments.samplers import fit_gmm, sample_gmm
from experiments.slots import load_slot, refuse_to_replace, same_data, trained_with

GRID = 10  # ae_vs_vae.png shows GRID x GRID samples per panel
REFERENCE_IMAGES = 10_000  # at most this many training images' features are compared with the test set's ("FID" floor)
GMM_COMPONENTS = 10
sample_count = NumberRange(int, 2, MAX_COUNT)  # --num-samples
# the IWAE estimate with these fewer samples too, from the same draws: what a cheaper k would cost
IWAE_SMALLER_K = (1, 10, 100)
# judge name -> largest blur of its training augmentation (pixels)
JUDGES = {"blur": ClassifierTraining.max_blur_sigma, "sharp": 0.0}
# what a comparison writes into --out-dir besides the judges' cache: replaced only with --overwrite
OUTPUTS = ("metrics.json", "ae_vs_vae.png", "latent_evolution.gif", "aggregate_posterior.png", "cvae_latent.png")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Compare a trained autoencoder and VAE (figures, metrics, tables).")
    parser.add_argument("--ae", type=Path, required=True, help="the autoencoder's checkpoint")
    parser.add_argument("--vae", type=Path, required=True, help="the VAE's checkpoint")
    parser.add_argument("--cvae", type=Path, help="a conditional VAE's checkpoint (optional)")
    parser.add_argument("--out-dir", type=Path, default=Path("comparison"),
                        help="where the figures, metrics.json and the classifiers go (default: comparison)")
    parser.add_argument("--data-dir", help="folder holding MNIST/raw/ (default: the VAE's training data folder if it exists here, else data)")
    parser.add_argument("--dataset", choices=tuple(DATASETS), help="(default: the VAE's training dataset)")
    parser.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                        help="download the dataset when missing (default: true)")
    parser.add_argument("--num-samples", type=sample_count, default=10_000,
                        help=f"decoded samples per sample set judged by the classifiers, {sample_count.span()}: "
                             f"a Fréchet distance needs a covariance (default: 10000)")
    parser.add_argument("--iwae-k", type=positive_int, default=1000,
                        help="importance samples per image for the -log p(x) estimate (default: 1000)")
    parser.add_argument("--iwae-images", type=estimate_images, default=1000,
                        help=f"test images for the -log p(x) estimate, {estimate_images.span()}: its standard "
                             f"error needs two (default: 1000)")
    parser.add_argument("--judges", nargs="+", choices=tuple(JUDGES), default=list(JUDGES),
                        help="classifiers that judge the samples: trained on blurred or on sharp digits "
                             "(default: blur sharp)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the figures and metrics.json of an earlier comparison in --out-dir (the cached "
                             "judges are reused either way)")
    parser.add_argument("--retrain-classifier", action="store_true",
                        help="train the judges again and replace their cached files")
    parser.add_argument("--classifier-epochs", type=positive_int, default=ClassifierTraining.epochs,
                        help=f"epochs when a judge is trained (default: {ClassifierTraining.epochs})")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="(default: auto: cuda, then mps, then cpu)")
    parser.add_argument("--batch-size", type=positive_int, default=1000,
                        help="images per inference batch (default: 1000)")
    parser.add_argument("--seed", type=seed_int, default=0,
                        help=f"samples, the GMMs and the VAE's noise, {seed_int.span()} (default: 0)")
    return parser.parse_args(argv)


def verdict(out: Classification, reference: tuple[np.ndarray, np.ndarray],
            wanted: torch.Tensor | None = None) -> dict[str, Any]:
    """Confidence, class spread, and the Fréchet distance of the features to `reference` (mean and
    covariance of the test set's features); with `wanted` labels also the accuracy against them."""
    probs = torch.softmax(out.logits, 1)
    predicted = out.logits.argmax(1)
    result = {**confidence_stats(probs.numpy()),
              "class_entropy": class_entropy(predicted.numpy(), out.logits.shape[1]),
              "class_shares": (torch.bincount(predicted, minlength=out.logits.shape[1]).double()
                               / len(predicted)).tolist(),
              "frechet_distance": frechet_distance_from_moments(*gaussian_moments(out.features.numpy()), *reference)}
    if wanted is not None:
        result["label_accuracy"] = float((predicted == wanted).double().mean())
    return result


def describe_model(model: nn.Module, test: Split, batch_size: int) -> tuple[dict[str, Any], torch.Tensor]:
    """Reconstruction and latent-geometry metrics; also returns the test codes."""
    codes = encode_codes(model, test.images, batch_size, labels=test.labels)
    return {"latent_dim": model.latent_dim,
            "reconstruction": reconstruction_metrics(model, test.images, batch_size, labels=test.labels),
            "latent": latent_geometry(codes)}, codes


def draw_samples(ae: nn.Module, vae: nn.Module, cvae: nn.Module | None, test_codes: dict[str, torch.Tensor],
                 train_codes: dict[str, torch.Tensor], n: int, seed: int, batch_size: int
                 ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The decoded sample sets (name -> images) and, for conditional ones, the labels asked for."""
    prior = torch.randn(n, ae.latent_dim, generator=torch.Generator().manual_seed(seed))  # same draws for AE and VAE
    samples = {"AE, z ~ N(0, I)": decode_codes(ae, prior, batch_size),
               "AE, z ~ U(code box)": decode_codes(ae, uniform_in_box(test_codes["ae"], n, torch.Generator()
                                                                      .manual_seed(seed)), batch_size),
               "AE + GMM": decode_codes(ae, sample_gmm(fit_gmm(train_codes["ae"], GMM_COMPONENTS, seed), n, seed),
                                        batch_size)}
    vae_prior = prior if vae.latent_dim == ae.latent_dim else torch.randn(
        n, vae.latent_dim, generator=torch.Generator().manual_seed(seed))
    samples["VAE, z ~ N(0, I)"] = decode_codes(vae, vae_prior, batch_size)
    samples["VAE + GMM"] = decode_codes(vae, sample_gmm(fit_gmm(train_codes["vae"], GMM_COMPONENTS, seed), n, seed),
                                        batch_size)
    wanted: dict[str, torch.Tensor] = {}
    if cvae is not None:
        labels = balanced_labels(n, NUM_CLASSES)
        z = torch.randn(n, cvae.latent_dim, generator=torch.Generator().manual_seed(seed))
        samples["CVAE, z ~ N(0, I)"] = decode_codes(cvae, z, batch_size, labels=labels)
        wanted["CVAE, z ~ N(0, I)"] = labels
    return samples, wanted


MODEL_ROWS = [  # (label, json path, format): the rows of the models table
    ("test BCE of the point code (nats/image)", ("reconstruction", "bce"), ".2f"),
    ("test MSE (per pixel)", ("reconstruction", "mse"), ".4f"),
    ("‖mean code‖", ("latent", "mean_norm"), ".3f"),
    ("std per dimension", ("latent", "std_per_dim"), ".2f"),
    ("centre offset ‖mean‖ / mean std", ("latent", "centre_offset"), ".3f"),
    ("share inside the prior's 95 % ball", ("latent", "share_in_prior"), ".3f"),
    ("test −ELBO (nats)", ("likelihood", "neg_elbo"), ".2f"),
    ("IWAE −log p(x) (nats)", ("likelihood", "iwae", "nll"), ".2f"),
    ("KL per latent dimension (nats)", ("posterior", "kl_per_dim"), ".2f"),
    ("active units (variance over x of E_q[z_i] > 0.01)", ("posterior", "active_units", "active"), "d"),
    ("KL(q(z) ‖ N(0, I)) of the aggregate posterior", ("posterior", "aggregate_kl", "kl"), ".3f"),
]
SAMPLE_COLUMNS = [  # (label, key, format): the columns of each judge's samples table
    ("mean confidence", "mean_confidence", ".3f"),
    ("share ≥ 0.9", "share_confident", ".3f"),
    ("class entropy (1 = uniform)", "class_entropy", ".3f"),
    ("Fréchet distance", "frechet_distance", ".1f"),
    ("accuracy on the asked label", "label_accuracy", ".3f"),
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


def format_tables(metrics: dict[str, Any]) -> str:
    """Markdown: one table of the models, then one table of the sample sets per judge."""
    models = metrics["models"]
    names = {"ae": "AE", "vae": "VAE", "cvae": "CVAE"}
    lines = ["| metric | " + " | ".join(f"{names[m]} (d={r['latent_dim']})" for m, r in models.items()) + " |",
             "|---|" + "---:|" * len(models)]
    for label, keys, fmt in MODEL_ROWS:
        if keys[-1] == "nll" and "vae" in models:
            iwae = models["vae"]["likelihood"]["iwae"]
            label = f"IWAE −log p(x), k={iwae['k']}, {iwae['images']} test images (nats)"
        lines.append(f"| {label} | " + " | ".join(_format(_lookup(r, keys), fmt) for r in models.values()) + " |")
    for judge, sets in metrics["samples"].items():
        info = metrics["classifiers"][judge]
        lines += ["", f"Samples judged by the classifier trained on {judge} digits "
                      f"(test accuracy {info['test_accuracy']:.2%}):", "",
                  "| samples | " + " | ".join(label for label, _, _ in SAMPLE_COLUMNS) + " |",
                  "|---|" + "---:|" * len(SAMPLE_COLUMNS)]
        for name, result in sets.items():
            lines.append(f"| {name} | " + " | ".join(_format(result.get(key), fmt) for _, key, fmt in SAMPLE_COLUMNS)
                         + " |")
    settings = metrics["settings"]
    lines += ["", f"{settings['num_samples']} samples per set; real digits: the test set, and for the Fréchet "
                  f"distance {settings['reference_images']} training images against the test set."]
    if settings.get("binarize", "none") != "none":
        lines[-1] += (" The models were trained on binarized digits and are measured on the fixed binary test set; "
                      "the judges see grey digits.")
    iwae = _lookup(models, ("vae", "likelihood", "iwae"))
    if iwae and iwae.get("by_k"):
        lines += ["", f"VAE IWAE −log p(x) with k = {iwae['k']}: {iwae['nll']:.2f}, standard error over the "
                      f"{iwae['images']} images {iwae['se']:.2f}. From the same draws with fewer samples, above it by: "
                  + ", ".join(f"k = {r['k']}: {r['excess']:.2f} ± {r['excess_se']:.2f}" for r in iwae["by_k"])
                  + " nats."]
    return "\n".join(lines)


def check_sizes(train: Split, test: Split, where: str) -> None:
    """Enough images for every number of the comparison: a mixture of GMM_COMPONENTS components is
    fitted to the training codes, and the Fréchet distances need two feature vectors at least."""
    if len(train) < max(GMM_COMPONENTS, 2) or len(test) < 2:
        raise DataError(f"{where} holds {len(train)} training and {len(test)} test images; the comparison needs "
                        f"{GMM_COMPONENTS} training images at least (its mixtures have {GMM_COMPONENTS} components) "
                        f"and 2 test images")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with exit_on_error(), removed_if_left_empty(args.out_dir):
        refuse_to_replace(args.out_dir, OUTPUTS, args.overwrite, "comparison")
        seconds: dict[str, float] = {}
        t0 = time.perf_counter()
        device = get_device(args.device)
        keep_freed_memory_on(device)  # the judges' training and the IWAE's decodes reuse their memory
        ae, ae_state = load_slot("--ae", args.ae, device, "ae")
        vae, vae_state = load_slot("--vae", args.vae, device, "vae", conditional=False)
        cvae, cvae_state = load_slot("--cvae", args.cvae, device, "vae", conditional=True) if args.cvae else (None, {})
        trained = same_data({"--ae": ae_state, "--vae": vae_state, **({"--cvae": cvae_state} if args.cvae else {})},
                            args.dataset)
        dataset, binarize = trained["dataset"], trained["binarize"]
        data_dir = data_dir_for(args.data_dir, vae_state.get("train", {}))
        test = load_split(data_dir, dataset, "test", download=args.download)
        train = load_split(data_dir, dataset, "train", download=args.download)
        check_sizes(train, test, f"{raw_folder(data_dir, dataset)}/")
        # the models are measured on the split they were trained for (the fixed binary test set after
        # --binarize dynamic); the judges see grey digits, as the decoded samples are
        measured = evaluation_split(test, binarize)
        check_writable(args.out_dir)
        judges: dict[str, tuple[DigitClassifier, dict[str, Any]]] = {}
        for judge in args.judges:
            judges[judge] = load_or_train_classifier(
                args.out_dir / f"classifier_{judge}.pt", lambda: train, test, dataset=dataset,
                retrain=args.retrain_classifier, device=device,
                training=ClassifierTraining(epochs=args.classifier_epochs, seed=args.seed,
                                            max_blur_sigma=JUDGES[judge]))
        seconds["setup_and_classifiers"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        models: dict[str, dict[str, Any]] = {}
        test_codes: dict[str, torch.Tensor] = {}
        states = {"ae": ae_state, "vae": vae_state, "cvae": cvae_state}
        for name, model, path in (("ae", ae, args.ae), ("vae", vae, args.vae), ("cvae", cvae, args.cvae)):
            if model is not None:
                models[name], test_codes[name] = describe_model(model, measured, args.batch_size)
                models[name].update(checkpoint=str(path), epochs=states[name].get("epoch"),
                                    trained_with=trained_with(states[name]))
        # the densities fitted after training see the training set's point codes (AE z, VAE mu)
        train_images = evaluation_split(train, binarize).images
        train_codes = {name: encode_codes(model, train_images, args.batch_size) for name, model in
                       (("ae", ae), ("vae", vae))}
        samples, wanted = draw_samples(ae, vae, cvae, test_codes, train_codes, args.num_samples, args.seed,
                                       args.batch_size)
        seconds["models_and_samples"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        judged: dict[str, dict[str, Any]] = {}
        reference_images = min(REFERENCE_IMAGES, len(train))
        for judge, (classifier, _) in judges.items():
            test_out = classify(classifier, test.images, args.batch_size)
            moments = gaussian_moments(test_out.features.numpy())
            real = classify(classifier, train.images[:reference_images], args.batch_size)
            judged[judge] = {name: verdict(classify(classifier, images, args.batch_size), moments, wanted.get(name))
                             for name, images in tqdm(samples.items(), desc=f"judging ({judge})", unit="set",
                                                      leave=False, disable=None)}
            # real digits: the verdict on the test set itself; its Fréchet distance (0 by definition)
            # replaced by that of training images, the floor a perfect generator would reach
            judged[judge]["real digits"] = {**verdict(test_out, moments, test.labels),
                                            "frechet_distance": verdict(real, moments)["frechet_distance"]}
        seconds["judges"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        likelihood = neg_elbo(vae, measured.images, args.batch_size, seed=args.seed)
        n_iwae = min(args.iwae_images, len(test))
        print(f"IWAE bound: k={args.iwae_k} on {n_iwae} test images ...", flush=True)
        likelihood["iwae"] = iwae_nll(vae, measured.images[:n_iwae], args.iwae_k, seed=args.seed,
                                      smaller_k=IWAE_SMALLER_K)
        models["vae"]["likelihood"] = likelihood
        posteriors = {name: posterior_parameters(model, measured.images, args.batch_size, labels=test.labels)
                      for name, model in (("vae", vae), ("cvae", cvae)) if model is not None}
        for name, (mu, logvar) in posteriors.items():
            models[name]["posterior"] = posterior_diagnostics(mu, logvar, seed=args.seed)
        seconds["likelihood_and_posterior"] = time.perf_counter() - t0

        metrics = {
            "models": models, "samples": judged,
            "prior_radius_95": {name: prior_radius(r["latent_dim"]) for name, r in models.items()},
            "classifiers": {judge: {k: v for k, v in info.items() if k != "format_version"}
                            for judge, (_, info) in judges.items()},
            "settings": {"data_dir": str(data_dir), "dataset": dataset, "binarize": binarize,
                         "train_images": len(train), "test_images": len(test), "num_samples": args.num_samples,
                         "iwae_k": args.iwae_k, "iwae_images": n_iwae, "seed": args.seed, "device": str(device),
                         "reference_images": reference_images, "gmm_components": GMM_COMPONENTS},
            "seconds": seconds,
        }
        with signals_deferred():  # SIGINT/SIGTERM wait: the figures and metrics.json are written together
            written = draw_figures(args, samples, test_codes, test.labels, posteriors, ae_state, vae_state)
            write_json(args.out_dir / "metrics.json", _finite(metrics))
            for name in OUTPUTS:  # with --overwrite: what the earlier comparison drew and this one did not
                if args.out_dir / name not in [*written, args.out_dir / "metrics.json"]:
                    (args.out_dir / name).unlink(missing_ok=True)
    print(format_tables(metrics))
    for path in [*written, args.out_dir / "metrics.json"]:
        print(path)
    return metrics


def draw_figures(args: argparse.Namespace, samples: dict[str, torch.Tensor], codes: dict[str, torch.Tensor],
                 labels: torch.Tensor, posteriors: dict[str, tuple[torch.Tensor, torch.Tensor]],
                 ae_state: dict[str, Any], vae_state: dict[str, Any]) -> list[Path]:
    grid = min(GRID, math.isqrt(args.num_samples))
    written = [study_figures.plot_ae_vs_vae(
        {name: images.numpy() for name, images in samples.items() if not name.startswith("CVAE")},
        first_two_dims(codes["ae"].numpy()), first_two_dims(codes["vae"].numpy()), labels.numpy(),
        args.out_dir / "ae_vs_vae.png", grid=grid)]
    histories = [(name, find_code_history(path, state)) for name, path, state in
                 (("AE z", args.ae, ae_state), ("VAE μ", args.vae, vae_state))]
    if all(history is not None for _, history in histories):
        written.append(figures.plot_latent_evolution(
            [(name, h.epochs, first_two_dims(h.codes), h.labels, True) for name, h in histories],
            args.out_dir / "latent_evolution.gif"))
    mu, logvar = posteriors["vae"]
    if mu.shape[1] == 2:
        extent = 4.0
        axis = torch.linspace(-extent, extent, 161, dtype=torch.float64)
        points = torch.stack(torch.meshgrid(axis, axis.flip(0), indexing="xy"), -1).reshape(-1, 2)
        density = aggregate_log_density(points, mu, logvar).exp().reshape(len(axis), len(axis)).numpy()
        prior = np.exp(-0.5 * (points.pow(2).sum(1)).numpy()) / (2 * math.pi)
        written.append(study_figures.plot_densities(
            [("VAE: aggregate posterior q(z) (test set)", density), ("prior N(0, I)", prior.reshape(density.shape))],
            extent, args.out_dir / "aggregate_posterior.png"))
    if "cvae" in codes:
        written.append(study_figures.plot_latent_panels(
            [("VAE: test-set μ", first_two_dims(codes["vae"].numpy())),
             ("conditional VAE: test-set μ", first_two_dims(codes["cvae"].numpy()))],
            labels.numpy(), args.out_dir / "cvae_latent.png"))
    return written


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

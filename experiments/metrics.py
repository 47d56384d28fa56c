"""Numbers that compare generative models.

Pure functions of arrays, plus estimates that run a model (reconstruction: any model with
`code(x)` and `decode_logits(z)`; likelihood: a VAE-like model with `encode(x) -> (mu, logvar)`).

    frechet_distance(a, b)        Fréchet distance between Gaussians fitted to two feature sets
    class_entropy(labels)         entropy of the predicted-class histogram, normalised to [0, 1]
    confidence_stats(probs)       mean max-softmax and the share of confident predictions
    latent_geometry(codes)        where the codes sit relative to the N(0, I) prior
    reconstruction_metrics(...)   test BCE (nats/image) and per-pixel MSE of decoding the code
    neg_elbo(...)                 test -ELBO (Bernoulli decoder), one z per image as in training
    iwae_nll(...)                 importance-weighted bound on -log p(x) (Burda et al., 2016)
    posterior_diagnostics(...)    KL per latent dimension, active units, KL(q(z) || p(z))

Everything is in nats; statistics are computed in float64 where precision matters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np
import scipy.stats
import torch
from torch import nn
from tqdm import tqdm

from common.data import iterate_batches, with_optional_labels
from common.options import MAX_COUNT, NumberRange
from variational_autoencoder.model import (
    LOG_2PI,
    elbo_terms,
    kl_terms,
    log_likelihood,
    log_posterior,
    log_prior,
    mean_squared_error,
    reparameterize,
)

# --iwae-images and the like: a standard error over the images needs two of them
estimate_images = NumberRange(int, 2, MAX_COUNT)

# (x, z) -> log p(x | z), one value per row: x (M, ...), z (M, latent_dim) -> (M,)
LogLikelihood = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------------------------
# feature statistics


def gaussian_moments(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) -> mean (D,) and unbiased covariance (D, D), in float64."""
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"need an (N, D) array with N >= 2, got shape {feats.shape}")
    return feats.mean(0), np.cov(feats, rowvar=False).reshape(feats.shape[1], feats.shape[1])


def _psd_sqrt(cov: np.ndarray) -> np.ndarray:
    """Symmetric square root of a covariance matrix; rounding's tiny negative eigenvalues count as 0."""
    values, vectors = np.linalg.eigh((cov + cov.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance_from_moments(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)): the squared 2-Wasserstein distance
    between N(mu1, S1) and N(mu2, S2), the quantity behind FID.

    tr((S1 S2)^(1/2)) is computed as tr((A S2 A)^(1/2)) with A = S1^(1/2): S1 S2 = A (A S2) and
    A S2 A = (A S2) A have the same eigenvalues (XY and YX always do), and A S2 A is symmetric PSD,
    so two eigh calls give it in float64 even when the covariances are singular (dead ReLU
    features), where scipy.linalg.sqrtm(S1 S2) warns and may return complex noise.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    root1 = _psd_sqrt(cov1)
    middle = root1 @ cov2 @ root1
    trace_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    diff = mu1 - mu2
    value = diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_covmean
    return float(max(value, 0.0))


def frechet_distance(features_a: np.ndarray | torch.Tensor, features_b: np.ndarray | torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two (N, D) feature sets."""
    return frechet_distance_from_moments(*gaussian_moments(features_a), *gaussian_moments(features_b))


# ----------------------------------------------------------------------------------------------
# classifier verdicts on samples


def histogram_entropy(counts: np.ndarray | torch.Tensor) -> float:
    """Entropy of a histogram divided by log(number of bins): 1 = uniform, 0 = one bin only."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or len(counts) < 2 or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError("need a 1-D histogram with at least 2 bins, non-negative and not all zero")
    return float(scipy.stats.entropy(counts) / math.log(len(counts))) + 0.0  # + 0.0 turns -0.0 into 0.0


def class_entropy(predicted: np.ndarray | torch.Tensor, num_classes: int = 10) -> float:
    """Normalised entropy of the histogram of predicted class labels (integers in [0, num_classes))."""
    labels = np.asarray(predicted).astype(np.int64).ravel()
    return histogram_entropy(np.bincount(labels, minlength=num_classes)[:num_classes])


def confidence_stats(probs: np.ndarray | torch.Tensor, threshold: float = 0.9) -> dict[str, float]:
    """From (N, classes) class probabilities: the mean max-probability and the share >= threshold."""
    top = np.asarray(probs, dtype=np.float64).max(1)
    return {"mean_confidence": float(top.mean()), "share_confident": float((top >= threshold).mean())}


# ----------------------------------------------------------------------------------------------
# latent geometry


def prior_radius(latent_dim: int, mass: float = 0.95) -> float:
    """Radius of the ball holding `mass` of N(0, I) in `latent_dim` dimensions: ||z||^2 ~ chi2(d)."""
    return math.sqrt(scipy.stats.chi2.ppf(mass, latent_dim))


def latent_geometry(codes: np.ndarray | torch.Tensor, mass: float = 0.95) -> dict[str, float | list[float]]:
    """Where (N, d) codes sit relative to the N(0, I) prior.

    mean_norm       ||mean code||
    std_per_dim     standard deviation of each dimension
    centre_offset   ||mean|| / (mean of the per-dimension stds): 0 = centred, scale-free
    share_in_prior  share of codes inside the ball holding `mass` of N(0, I)
    """
    z = np.asarray(codes, dtype=np.float64)
    mean, std = z.mean(0), z.std(0)
    return {
        "mean_norm": float(np.linalg.norm(mean)),
        "std_per_dim": [float(s) for s in std],
        "centre_offset": float(np.linalg.norm(mean) / std.mean()),
        "share_in_prior": float((np.linalg.norm(z, axis=1) <= prior_radius(z.shape[1], mass)).mean()),
    }


# ----------------------------------------------------------------------------------------------
# reconstruction and likelihood (run a model)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def reconstruction_metrics(model: nn.Module, x: torch.Tensor, batch_size: int = 1000,
                           labels: torch.Tensor | None = None) -> dict[str, float]:
    """Decode each image's point code (AE z, VAE mu): BCE summed over pixels (nats/image) and MSE per
    pixel. `labels` reach a conditional model."""
    model.eval()
    device = _device(model)
    bce = mse = 0.0
    for batch, y in with_optional_labels(x, labels, batch_size):
        batch = batch.to(device)
        y = None if y is None else y.to(device)
        logits = model.decode_logits(model.code(batch, y), y).float()
        bce -= log_likelihood(logits, batch).sum().item()
        mse += mean_squared_error(logits, batch).item() * batch.numel()
    return {"bce": bce / len(x), "mse": mse / x.numel()}


def decoder_log_likelihood(decode_logits: Callable[[torch.Tensor], torch.Tensor]) -> LogLikelihood:
    """log p(x | z) for independent Bernoulli pixels with logits decode_logits(z), per image."""
    return lambda x, z: log_likelihood(decode_logits(z), x)


@torch.inference_mode()
def neg_elbo(model: nn.Module, x: torch.Tensor, batch_size: int = 1000, seed: int = 0) -> dict[str, float]:
    """Test -ELBO = E_q[-log p(x|z)] + KL(q || p), nats/image; one z per image (as in training's
    evaluation), analytic KL, fixed noise."""
    model.eval()
    device = _device(model)
    gen = torch.Generator(device=device).manual_seed(seed)
    sums = {"neg_elbo": 0.0, "recon": 0.0, "kl": 0.0}
    for batch in iterate_batches(x, batch_size):
        batch = batch.to(device)
        mu, logvar = (t.float() for t in model.encode(batch))
        terms = elbo_terms(model.decode_logits(reparameterize(mu, logvar, gen)), batch, mu, logvar)
        for name, key in (("neg_elbo", "neg_elbo"), ("recon", "bce"), ("kl", "kl")):
            sums[name] += terms[key].item() * len(batch)  # per-image mean -> batch sum
    return {name: value / len(x) for name, value in sums.items()}


class ImportanceEstimate(NamedTuple):
    log_px: torch.Tensor  # (N,) IWAE bound: log (1/k) sum_i w_i, the estimate of log p(x)
    elbo: torch.Tensor  # (N,) the ELBO from the same k draws: (1/k) sum_i log w_i (<= log_px)
    # smaller k' -> (N,) the IWAE bound with k' samples from the same draws, averaged over their
    # k // k' disjoint groups of k' (what a run with k' would have estimated, with less noise)
    by_k: Mapping[int, torch.Tensor] = MappingProxyType({})


def importance_weighted_bound(
    x: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    log_likelihood: LogLikelihood,
    num_samples: int,
    samples_per_pass: int | None = None,
    generator: torch.Generator | None = None,
    smaller_k: Sequence[int] = (),
) -> ImportanceEstimate:
    """IWAE bound on log p(x) with q(z|x) = N(mu, diag(exp(logvar))), p(z) = N(0, I):

        log p(x) >= log (1/k) sum_{i=1..k} p(x|z_i) p(z_i) / q(z_i|x),   z_i ~ q(z|x)

    x (N, ...), mu and logvar (N, d). The k draws are taken `samples_per_pass` at a time and
    combined with a running logsumexp, so memory is bounded by samples_per_pass * N decodes.
    It equals log p(x) for any k when q is the exact posterior, and tends to it as k grows.
    For each k' in `smaller_k` (1 <= k' < k) the bound with k' samples is taken from the same
    draws (`by_k`); those keep every log-weight, k * N float64 numbers (4 MB for k = 5000, N = 100).
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    if any(not 1 <= k < num_samples for k in smaller_k):
        raise ValueError(f"smaller_k must lie in [1, {num_samples - 1}], got {list(smaller_k)}")
    per_pass = min(samples_per_pass or num_samples, num_samples)
    mu, logvar = mu.double(), logvar.double()
    n, d = mu.shape
    log_sum = torch.full((n,), -math.inf, dtype=torch.float64, device=mu.device)
    log_w_sum = torch.zeros(n, dtype=torch.float64, device=mu.device)
    kept: list[torch.Tensor] = []  # every pass's log-weights, only when smaller_k asks for them
    done = 0
    while done < num_samples:
        s = min(per_pass, num_samples - done)
        z = reparameterize(mu.expand(s, n, d), logvar.expand(s, n, d), generator)  # (s, N, d)
        x_rep = x.unsqueeze(0).expand(s, *x.shape).reshape(s * n, *x.shape[1:])
        log_lik = log_likelihood(x_rep, z.reshape(s * n, d).to(x.dtype)).double().view(s, n)
        log_w = log_lik + log_prior(z) - log_posterior(z, mu, logvar)  # (s, N)
        log_sum = torch.logaddexp(log_sum, torch.logsumexp(log_w, 0))
        log_w_sum += log_w.sum(0)
        if smaller_k:
            kept.append(log_w)
        done += s
    by_k = {}
    if smaller_k:
        log_w_all = torch.cat(kept)  # (k, N)
        for k in smaller_k:
            groups = log_w_all[: num_samples // k * k].view(num_samples // k, k, n)
            by_k[k] = (torch.logsumexp(groups, 1) - math.log(k)).mean(0)
    return ImportanceEstimate(log_px=log_sum - math.log(num_samples), elbo=log_w_sum / num_samples,
                              by_k=MappingProxyType(by_k))


@torch.inference_mode()
def iwae_nll(
    model: nn.Module,
    x: torch.Tensor,
    num_samples: int = 1000,
    batch_size: int = 100,
    max_decodes: int | None = None,
    seed: int = 0,
    smaller_k: Sequence[int] = (),
) -> dict[str, Any]:
    """-log p(x) estimated with the IWAE bound (k = num_samples), for a VAE with a Bernoulli
    decoder; nats/image averaged over x, with its standard error over the images ("se"). Also the
    -ELBO from the same draws (always >= the bound). In float32 (float64 for the weights) on every
    device: TF32 is switched off on GPUs.

    Images go `batch_size` at a time; each decoder pass handles at most `max_decodes` (image,
    sample) pairs, which bounds memory whatever k is (default: 800 on a CPU, 16,384 on a GPU,
    where larger passes keep it busy; about 1.6 GB of activations there). On a CPU, 800 decodes
    (80 MB per activation tensor) took 13.5-14.1 s where 4,096 took 24.7-24.9 s (k = 1000, 100
    test images, one 2-core AMD EPYC, with or without the AVX2 cap): passes that large outgrew the
    heap's kept free memory and were faulted in again each time. With 100 images a pass of 800
    takes 8 samples each, a multiple of 4 as 4,096's 40 was, so every pass draws a multiple of 16
    normal numbers whatever the latent size (CPU randn fills blocks of 16): the same z as before.

    What the estimate would have been with fewer samples, from the same draws (no extra decodes):
    for each k' in `smaller_k` below k, "by_k" lists its -log p(x) and how far it lies above the
    k-sample estimate ("excess", with its standard error over the images: the images are the same,
    so this difference is far more precise than either number).
    """
    smaller_k = sorted({k for k in smaller_k if k < num_samples})
    model.eval()
    device = _device(model)
    max_decodes = max_decodes or (800 if device.type == "cpu" else 16_384)
    gen = torch.Generator(device=device).manual_seed(seed)
    log_lik = decoder_log_likelihood(model.decode_logits)
    log_px, elbo = [], []
    by_k: dict[int, list[torch.Tensor]] = {k: [] for k in smaller_k}
    # full float32 on GPUs too: cuDNN's default TF32 convolutions shift log p(x|z) measurably
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        for batch in tqdm(iterate_batches(x, batch_size), total=math.ceil(len(x) / batch_size),
                          desc=f"IWAE k={num_samples}", unit="batch", leave=False, disable=None):
            batch = batch.to(device)
            mu, logvar = model.encode(batch)
            est = importance_weighted_bound(batch, mu, logvar, log_lik, num_samples,
                                            samples_per_pass=max(1, max_decodes // len(batch)), generator=gen,
                                            smaller_k=smaller_k)
            log_px.append(est.log_px)
            elbo.append(est.elbo)
            for k in smaller_k:
                by_k[k].append(est.by_k[k])
    log_px_all = torch.cat(log_px)
    result: dict[str, Any] = {"nll": -log_px_all.mean().item(), "se": _standard_error(log_px_all),
                              "neg_elbo_same_draws": -torch.cat(elbo).mean().item(), "k": num_samples,
                              "images": len(x)}
    if smaller_k:
        result["by_k"] = []
        for k, parts in by_k.items():
            estimate = torch.cat(parts)
            excess = log_px_all - estimate  # >= 0 image by image where k' divides k (Jensen)
            result["by_k"].append({"k": k, "nll": -estimate.mean().item(), "se": _standard_error(estimate),
                                   "excess": excess.mean().item(), "excess_se": _standard_error(excess)})
    return result


def _standard_error(values: torch.Tensor) -> float:
    """Standard error of the mean of `values` (NaN for fewer than two)."""
    return values.std().item() / math.sqrt(len(values)) if len(values) > 1 else float("nan")


# ----------------------------------------------------------------------------------------------
# posterior diagnostics: how a VAE uses its latent dimensions, and how close q(z) is to p(z)


def kl_per_dimension(mu: torch.Tensor, logvar: torch.Tensor) -> np.ndarray:
    """KL(q(z_i|x) || N(0, 1)) of each latent dimension i, averaged over the images: (d,) nats.
    Summed over i it is the KL term of the -ELBO."""
    mu, logvar = mu.double(), logvar.double()
    return kl_terms(mu.double(), logvar.double()).mean(0).cpu().numpy()


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> dict[str, Any]:
    """Burda et al. (2016): dimension i is active when Var_x(E_q[z_i | x]) > threshold. `mu` (N, d)
    are the posterior means, E_q[z | x]. Returns the count and each dimension's variance."""
    variance = mu.double().var(0, unbiased=True).cpu().numpy()
    return {"active": int((variance > threshold).sum()), "variance": [float(v) for v in variance],
            "threshold": threshold}


def _log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z_s; mu_m, diag(exp(logvar_m))) for every pair: z (S, d), mu and logvar (M, d) -> (S, M).

    The squared distance is expanded, sum_i (z_i^2 - 2 z_i mu_i + mu_i^2) / var_i, so the work is
    two matrix products instead of an (S, M, d) intermediate (float64: no loss from the expansion
    at these scales)."""
    inv_var = torch.exp(-logvar)  # (M, d)
    constant = (mu.pow(2) * inv_var + logvar).sum(1) + mu.shape[1] * LOG_2PI  # (M,)
    squared = z.pow(2) @ inv_var.T - 2 * z @ (mu * inv_var).T  # (S, M)
    return -0.5 * (squared + constant)


def aggregate_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log q(z) of the aggregate posterior q(z) = (1/M) sum_m N(z; mu_m, diag(exp(logvar_m))), the
    mixture of the M posteriors: z (S, d) -> (S,), float64, evaluated exactly, in chunks of points
    that keep the (chunk, M) intermediate near 8 M numbers (64 MB)."""
    mu, logvar = mu.double(), logvar.double()
    chunk = max(1, 2**23 // mu.shape[0])
    out = [torch.logsumexp(_log_normal(part.double(), mu, logvar), 1) - math.log(len(mu))
           for part in z.split(chunk)]
    return torch.cat(out)


def aggregate_kl(mu: torch.Tensor, logvar: torch.Tensor, num_samples: int = 10_000, seed: int = 0) -> dict[str, float]:
    """KL(q(z) || p(z)) between the aggregate posterior (the mixture of the M posteriors above) and
    N(0, I), by Monte Carlo: z_s ~ q(z) (pick a posterior uniformly, sample it), then the mean of
    log q(z_s) - log p(z_s) with log q(z_s) exact under the mixture. Returns the estimate and its
    standard error over the samples. It is 0 exactly when the codes, as a whole, follow the prior."""
    gen = torch.Generator().manual_seed(seed)
    mu, logvar = mu.double().cpu(), logvar.double().cpu()
    pick = torch.randint(len(mu), (num_samples,), generator=gen)
    z = reparameterize(mu[pick], logvar[pick], gen)
    terms = aggregate_log_density(z, mu, logvar) - log_prior(z)
    return {"kl": float(terms.mean()), "se": float(terms.std() / math.sqrt(num_samples)), "samples": num_samples}


@torch.inference_mode()
def posterior_parameters(model: nn.Module, x: torch.Tensor, batch_size: int = 1000,
                         labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, logvar) of q(z|x) for every image, on the CPU, in float32."""
    model.eval()
    device = _device(model)
    mus, logvars = [], []
    for batch, y in with_optional_labels(x, labels, batch_size):
        mu, logvar = model.encode(batch.to(device), None if y is None else y.to(device))
        mus.append(mu.float().cpu())
        logvars.append(logvar.float().cpu())
    return torch.cat(mus), torch.cat(logvars)


def posterior_diagnostics(mu: torch.Tensor, logvar: torch.Tensor, seed: int = 0) -> dict[str, Any]:
    """KL per dimension, active units and KL(q(z) || p(z)) of a VAE's test-set posteriors."""
    return {"kl_per_dim": [float(v) for v in kl_per_dimension(mu, logvar)], "active_units": active_units(mu),
            "aggregate_kl": aggregate_kl(mu, logvar, seed=seed)}

"""Dynamic binarization (Burda et al. 2016) and the quotable IWAE estimate: exact in distribution,
one fixed binary test set, resumable, and the full-test-set IWAE against a direct computation."""

import math

import pytest
import torch

from common.data import binarization_generator, binarize_test_set, binarized, evaluation_split, load_split
from common.errors import DataError
from experiments.metrics import iwae_nll
from variational_autoencoder import train as vae_train
from variational_autoencoder.model import VAE, VAEConfig

FAST = ["--batch-size", "32", "--device", "cpu", "--no-download", "--filters", "8,8,8,8"]


def test_dynamic_binarization_is_exact_in_distribution():
    p = torch.linspace(0, 1, 11).view(1, 1, 1, 11).expand(4000, 1, 1, 11).contiguous()
    gen = binarization_generator(seed=0, epoch=1, device=torch.device("cpu"))
    (x, y), = binarized(iter([(p, torch.zeros(4000, dtype=torch.long))]), gen)
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    # each column is 4000 Bernoulli(p) draws: mean within 5 standard errors of p
    mean = x.mean(0).flatten()
    se = (p[0].flatten() * (1 - p[0].flatten()) / 4000).sqrt()
    assert ((mean - p[0].flatten()).abs() <= 5 * se + 1e-12).all()
    assert mean[0] == 0 and mean[-1] == 1  # intensities 0 and 1 stay exactly 0 and 1


def test_draws_are_fresh_every_epoch_and_fixed_per_seed_and_epoch():
    x = torch.full((64, 1, 28, 28), 0.5)
    batch = lambda: iter([(x, torch.zeros(64, dtype=torch.long))])  # noqa: E731
    draw = lambda seed, epoch: next(binarized(batch(), binarization_generator(seed, epoch, x.device)))[0]  # noqa: E731
    assert torch.equal(draw(0, 1), draw(0, 1))
    assert not torch.equal(draw(0, 1), draw(0, 2)) and not torch.equal(draw(0, 1), draw(1, 1))


def test_the_binary_test_set_is_fixed(tiny_mnist):
    test = load_split(tiny_mnist, "mnist", "test", download=False)
    a, b = evaluation_split(test, "dynamic"), evaluation_split(test, "dynamic")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, test.labels)
    assert set(a.images.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(binarize_test_set(test.images, seed=1), a.images)
    assert evaluation_split(test, "none") is test
    with pytest.raises(DataError, match="unknown binarization"):
        evaluation_split(test, "static")


def test_a_resumed_binarized_run_equals_an_uninterrupted_one(tmp_path, tiny_mnist):
    # a constant learning rate: a 1-epoch run resumed to 2 epochs follows the 2-epoch run exactly
    args = ["--data-dir", str(tiny_mnist), "--binarize", "dynamic", "--seed", "2", "--lr-schedule", "constant", *FAST]
    straight = vae_train.main([*args, "--epochs", "2", "--out-dir", str(tmp_path / "a")])
    vae_train.main([*args, "--epochs", "1", "--out-dir", str(tmp_path / "b")])
    resumed = vae_train.main(["--out-dir", str(tmp_path / "b"), "--epochs", "2", "--resume"])
    a = torch.load(straight["checkpoint"], weights_only=True)
    b = torch.load(resumed["checkpoint"], weights_only=True)
    assert a["train"]["binarize"] == b["train"]["binarize"] == "dynamic"
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert straight["history"][-1]["test_loss"] == resumed["history"][-1]["test_loss"]
    grey = vae_train.main([*args[:-len(FAST)], *FAST, "--binarize", "none", "--epochs", "2",
                           "--out-dir", str(tmp_path / "c")])
    assert grey["history"][-1]["train_loss"] != straight["history"][-1]["train_loss"]


def test_full_test_set_iwae_matches_direct_integration_on_a_tiny_model():
    # d = 1: log p(x) = log of the integral of p(x | z) N(z; 0, 1) over z, by the trapezoid rule
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=1, filters=(4, 4), kernel_sizes=(3, 3), strides=(2, 2))).eval()
    x = torch.bernoulli(torch.rand(12, 1, 28, 28), generator=torch.Generator().manual_seed(1))
    z = torch.linspace(-9, 9, 3601).view(-1, 1)
    with torch.inference_mode():
        logits = model.decode_logits(z)  # (Z, 1, 28, 28)
        log_lik = torch.stack([-torch.nn.functional.binary_cross_entropy_with_logits(
            logits.double(), xi.double().expand_as(logits), reduction="none").flatten(1).sum(1) for xi in x])
    log_joint = log_lik - 0.5 * z.view(1, -1).double() ** 2 - 0.5 * math.log(2 * math.pi)
    log_px = torch.logsumexp(log_joint, 1) + math.log(z[1, 0] - z[0, 0])  # Riemann sum, the tails are negligible
    result = iwae_nll(model, x, num_samples=4000, batch_size=5, seed=0)
    assert result["images"] == 12 and result["k"] == 4000
    assert result["nll"] == pytest.approx(-log_px.mean().item(), abs=0.02)
    assert result["se"] == pytest.approx(log_px.std().item() / math.sqrt(12), rel=0.05)

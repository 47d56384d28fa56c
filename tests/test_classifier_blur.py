"""The blur augmentation of the judge classifier, against a Gaussian worked out directly."""

import math

import pytest
import torch

from common.classifier import random_blur


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

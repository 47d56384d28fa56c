"""common/conv.py: the architecture config's sizes and validation."""

import pytest

from common.nets import ConvNetConfig
from vanila_autoencoder.model import AEConfig


def test_feature_sizes_are_ceil_of_size_over_stride():
    assert ConvNetConfig(strides=(1, 2, 2, 2)).feature_sizes() == [28, 28, 14, 7, 4]


@pytest.mark.parametrize("kwargs", [
    {"kernel_sizes": (3, 4, 3, 3)},
    {"filters": (32, 64)},
    {"latent_dim": 0},
    {"strides": (1, 0, 2, 1)},
])
def test_bad_architectures_are_refused(kwargs):
    with pytest.raises(ValueError):
        AEConfig(**kwargs)
